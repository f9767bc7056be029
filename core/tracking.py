"""Weights & Biases for every stage: offline unless the user configured W&B.

Offline runs land in `<run folder>/wandb/` and can be uploaded later with `wandb sync`.
Configs logged here never contain secrets: keys are read from the environment by the
engines and are not part of any config dataclass.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def offline_unless_configured() -> None:
    """The one W&B rule of the project: runs are offline unless the user configured W&B (a key or WANDB_MODE)."""
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"


@contextlib.contextmanager
def stage_run(stage: str, config: dict, run_dir, report_to: str = "wandb", project: str = "magpie-repro",
              group: str | None = None):
    """Yields a `log(dict)` function; a no-op when W&B is off or not installed."""
    run = None
    if report_to == "wandb":
        try:
            import wandb
        except ImportError:
            print("wandb is not installed; not logging (pip install wandb)", file=sys.stderr)
        else:
            offline_unless_configured()
            os.environ.setdefault("WANDB_SILENT", "true")
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            run = wandb.init(project=project, group=group or Path(run_dir).name, job_type=stage,
                             name=f"{group or Path(run_dir).name}-{stage}", config=config, dir=str(run_dir),
                             reinit="finish_previous")
    failed = True
    try:
        yield (run.log if run is not None else (lambda *_a, **_k: None))
        failed = False
    finally:
        if run is not None:
            mode = "offline" if os.environ.get("WANDB_MODE") == "offline" else "online"
            where = run.dir if mode == "offline" else run.url
            run.finish(exit_code=1 if failed else 0)  # a stage that raised is a failed run in W&B too
            hint = f" (upload: wandb sync {Path(where).parent})" if mode == "offline" else ""
            print(f"W&B {mode} run: {where}{hint}", file=sys.stderr)
