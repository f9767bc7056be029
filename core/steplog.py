"""What the engines did, step by step: the record `python -m synth plan` forecasts a job from.

A job's time is not linear in its size where the engine runs a batch: a vLLM step costs about as much for 16
running sequences as for 48 on a CPU (or for 256 on a GPU), so a calibration smaller than the engine's batch
answers at a fraction of the job's rate. The planner therefore needs the steps themselves: how many sequences each
ran, with how many prompt tokens, in how long, and what each request asked and got. It sets MAGPIE_STEP_LOG to a
file for its calibration run; every engine of that run, in whatever process, appends one JSON line per step (a
vLLM step, or an hf batch of `n` steps), one per finished call's requests, and one per fixed cost (an engine
build, a model load, a stage process's start), each stamped with the wall clock so that it falls in its stage's
interval of stage_times.jsonl. Unset (every other run), nothing is recorded and the calls below cost a lookup.
"""
from __future__ import annotations

import json
import os
import threading
import time

ENV = "MAGPIE_STEP_LOG"
_lock = threading.Lock()
_files: dict[str, object] = {}  # path -> its open file


def on() -> bool:
    return bool(os.environ.get(ENV))


def _write(line: dict) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    with _lock:
        if path not in _files:  # line-buffered: each line reaches the file before a stage process's os._exit
            _files[path] = open(path, "a", buffering=1)
        _files[path].write(json.dumps(line, separators=(",", ":")) + "\n")


def key(engine) -> str:
    """An engine's name in the log: its process and object (one process may hold several)."""
    return f"{os.getpid()}-{id(engine):x}"


def step(engine, kind: str, cap: int, running: int, prompt_tokens: int, seconds: float, steps: int = 1) -> None:
    """`steps` decoding steps of `running` sequences (`cap` at most at once: vLLM's max_num_seqs, hf's batch size),
    with `prompt_tokens` prefilled, in `seconds`."""
    if on():
        _write({"step": key(engine), "kind": kind, "cap": cap, "k": running, "n": steps, "p": prompt_tokens,
                "dt": round(seconds, 6), "t": time.time()})


def requests(engine, pairs: list[tuple[int, int]]) -> None:
    """The (prompt tokens, generated tokens) of each sequence of a finished call, in the order they were sent."""
    if on() and pairs:
        _write({"requests": key(engine), "pg": [list(p) for p in pairs], "t": time.time()})


def fixed(what: str, seconds: float) -> None:
    """A cost that does not grow with the work (an engine build, a model load, a process start), just ended."""
    if on():
        _write({"fixed": what, "dt": round(seconds, 6), "t": time.time()})


def read(path) -> list[dict]:
    """The records of a log, in order; a line cut by a kill is skipped."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
