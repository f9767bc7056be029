"""What the three entry points (`python -m synth`, `python -m eval`, `python -m report`) share: one way to fail."""
from __future__ import annotations

import sys


def die(msg: str, code: int = 2):
    """One line on stderr, `error: ...`, and the exit code (2: bad input, nothing was written)."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)
