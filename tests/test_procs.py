"""One process per model (core/procs.py): the same records in a process of their own, exceptions that come back
as themselves, and a worker that does not outlive a killed run."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT, cli

from core import procs, store
from core.models import looks_local, resolve


def test_stages_in_their_own_processes_give_the_same_records(tiny_run, tmp_path, monkeypatch):
    """MAGPIE_ISOLATE=1 puts the hf stages where vLLM's always go: a spawned process, one for the consecutive stages
    on one model (instructions and responses: one engine, built once)."""
    from synth.__main__ import main

    monkeypatch.setenv("MAGPIE_ISOLATE", "1")
    procs.HISTORY.clear()
    assert main(cli(tmp_path, "--report_to", "none")) == 0
    ran = [(target, pid) for target, pid in procs.HISTORY]
    assert [t for t, _ in ran] == ["synth.stages:run_segment"]  # instructions, then responses, in one process
    assert len({pid for _, pid in ran} | {os.getpid()}) == 2  # not this one
    for stage in ("instructions", "responses"):
        assert store.DatasetDir(tmp_path / stage).records() == store.DatasetDir(tiny_run / stage).records()
    # Complete: a second run reads both stages back without a process (and without a model)
    procs.HISTORY.clear()
    assert main(cli(tmp_path, "--report_to", "none")) == 0
    assert procs.HISTORY == []


def test_an_exception_in_the_worker_comes_back_as_itself(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        procs.in_own_process(resolve, str(tmp_path / "no" / "such" / "model"))
    assert procs.place(looks_local, "/x", engines=("vllm",)) is True  # a vLLM model's work: in its own process
    assert procs.HISTORY[-1][0] == "core.models:looks_local"


def test_a_killed_run_leaves_no_worker_and_no_grandchild():
    """The worker (here running `sleep`, as a stage runs vLLM's engine core) and everything it started end when
    the process that asked for it is killed."""
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess; from core.procs import in_own_process; "
                               "in_own_process(subprocess.run, ['sleep', '3600'])"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        p = psutil.Process(parent.pid)
        sleeper = None
        while sleeper is None:
            workers = [c for c in p.children() if "spawn_main" in " ".join(c.cmdline())]
            sleepers = [g for w in workers for g in w.children() if g.name() == "sleep"]
            sleeper = sleepers[0] if sleepers else None
            time.sleep(0.1)
        worker = workers[0]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for proc in (sleeper, worker):  # no time limit: a survivor hangs the test (pytest-timeout fails it)
            while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.1)
    finally:
        parent.kill()
