"""One process per model: a stage (or a group of taggers) that loads a model runs in a fresh process.

vLLM fills a GPU to `gpu_memory_utilization` (0.9) and its V1 engine runs the model in a subprocess that
`del` + `gc` does not reliably end; transformers models stay in the caching allocator. A second model in the
same process then cannot start. So every model-loading unit of `run`, `tag` and `eval` is executed by
`in_own_process`: a spawned interpreter (CUDA and vLLM refuse to be forked) that imports the stage, runs
it and exits; its exit returns every byte of host and device memory, and the next model starts clean.

The child dies with its parent (PR_SET_PDEATHSIG): a killed run leaves no worker writing shards behind it,
so a resume never races an orphan. Results and exceptions travel back by pickle: a stage's ValueError
arrives as the same ValueError, with the child's traceback attached.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

# Processes this interpreter ran, as (target, pid): what a test reads to see that models did not share one.
HISTORY: list[tuple[str, int]] = []


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _call(target: str, args: tuple, kwargs: dict):
    module, fn = target.split(":")
    return os.getpid(), getattr(importlib.import_module(module), fn)(*args, **kwargs)


def in_own_process(target: str, *args, **kwargs):
    """`module:function(*args, **kwargs)` run in a fresh spawned process; its result, or its exception."""
    import concurrent.futures as cf
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_die_with_parent,
                                initargs=(os.getpid(),)) as pool:
        try:
            pid, result = pool.submit(_call, target, args, kwargs).result()
        except BrokenProcessPool:
            raise RuntimeError(f"the process running {target} died without an answer (killed, or out of memory); "
                               "run the command again: finished shards are kept") from None
    HISTORY.append((target, pid))
    return result


def isolate(*engines: str) -> bool:
    """Whether models on `engines` get a process of their own: always for vLLM (its engine core outlives `del`),
    and for every local engine on a GPU; an hf model on a CPU stays in the stage's process (a spawn costs ~3 s
    of imports per stage there, and CPU memory is not the scarce thing). MAGPIE_ISOLATE=1 or 0 forces it."""
    forced = os.environ.get("MAGPIE_ISOLATE")
    if forced in ("0", "1"):
        return forced == "1"
    local = [e for e in engines if e and e != "openai"]
    if "vllm" in local:
        return True
    if not local:
        return False
    import torch

    return torch.cuda.is_available()


def call(target: str, *args, isolated: bool, **kwargs):
    """`module:function(*args, **kwargs)`: in a process of its own when `isolated`, else here."""
    if isolated:
        return in_own_process(target, *args, **kwargs)
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)(*args, **kwargs)
