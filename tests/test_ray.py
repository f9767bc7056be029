"""The model stages on a real local Ray cluster (synth/cluster.py): the records of a single-process run, an actor
or the driver SIGKILLed mid-job losing nothing and writing nothing twice, and bad clusters refused in one line.

The cluster has 3 logical CPUs on this 2-core machine: two 1-CPU engine actors plus the slot Ray Data's own tasks
need (ray-project/ray#44687). It is this test session's own; nothing here runs `ray stop`, which would kill every
Ray process on the machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, TINY, kill_when
from synth import store

ray = pytest.importorskip("ray")

# Small but real: 16 instructions in 4 shards, 4 responses per shard, two taggers (a SmolLM2 judge, language).
ARGS = ["--config", TINY, "--stages", "instructions", "responses", "tag", "--total_prompts", "16", "--n", "4",
        "--hf_batch_size", "4", "--max_tokens", "48", "--response_max_tokens", "32", "--response_batch_size", "4",
        "--taggers", "task_category", "language", "--tag_batch_size", "4", "--report_to", "none"]
STAGES = ("instructions", "responses", "tagged")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ctx = ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False,
                   object_store_memory=128 * 2**20, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ctx
    ray.shutdown()  # this session's cluster only


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: the same config in this process, with the actors' one torch thread (the hf engine's bf16
    sums depend on the thread count)."""
    import torch

    from synth.__main__ import main

    out, threads = tmp_path_factory.mktemp("single"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", *ARGS, "--output_dir", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def records(run) -> dict[str, list[dict]]:
    """Each stage's records, with the manifests' timing fields left out (they differ run to run)."""
    return {s: store.DatasetDir(run / s).records() for s in STAGES}


def assert_same_run(run, single):
    for s in STAGES:
        assert store.DatasetDir(run / s).complete, s
        assert store.DatasetDir(run / s).shards() == store.DatasetDir(single / s).shards(), s
    got, want = records(run), records(single)
    for s in STAGES:
        assert [r["id"] for r in got[s]] == [r["id"] for r in want[s]], s  # nothing lost, nothing twice
        assert got[s] == want[s], s
    assert got["tagged"][0]["task_category"] is not None or any(r["task_category"] for r in got["tagged"])


def _map_workers() -> list:
    """This session's Ray Data actor processes (children of our raylet), by their process title."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "MapWorker" in " ".join(p.cmdline() or [p.name()])]


def test_two_actors_write_the_records_of_one_process(cluster, single, tmp_path, capsys):
    from synth.__main__ import main

    out = tmp_path / "ray"
    assert main(["run", *ARGS, "--output_dir", str(out), "--ray_address", "auto", "--ray_actors", "2"]) == 0
    err = capsys.readouterr().err
    assert "on 2 actor(s)" in err  # the shards went to two actors
    assert_same_run(out, single)
    # A rerun finds every stage complete: nothing is computed or sent to the cluster.
    assert main(["run", *ARGS, "--output_dir", str(out), "--ray_address", "auto"]) == 0
    assert "actor(s)" not in capsys.readouterr().err
    assert_same_run(out, single)


def test_a_killed_actor_is_restarted_and_its_shard_redone(cluster, single, tmp_path):
    from synth.__main__ import main

    out = tmp_path / "ray"
    killed: list[int] = []
    finished = threading.Event()

    def kill_one_actor():  # once responses has its first shard, SIGKILL an actor mid-job
        first = out / "responses" / "data" / "part-00000.parquet"
        while not first.exists() and not finished.is_set():
            time.sleep(0.05)
        for p in _map_workers():
            os.kill(p.pid, signal.SIGKILL)
            killed.append(p.pid)
            return

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    try:
        assert main(["run", *ARGS, "--output_dir", str(out), "--ray_address", "auto", "--ray_actors", "2"]) == 0
    finally:
        finished.set()
        killer.join()
    assert killed, "no actor was running when the first responses shard appeared"
    assert_same_run(out, single)


def test_a_killed_driver_resumes_when_run_again(cluster, single, tmp_path):
    out = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address  # the subprocess drives this session's cluster
    argv = ["run", *ARGS, "--output_dir", str(out), "--ray_address", address, "--ray_actors", "2"]
    assert kill_when("synth", argv, out / "responses" / "data" / "part-00001.parquet"), kill_when.stderr
    assert not store.DatasetDir(out / "responses").complete
    assert not (out / "tagged").exists()
    done = subprocess.run([sys.executable, "-m", "synth", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(out, single)


def test_a_cluster_without_the_gpus_asked_for_is_one_line(cluster, tmp_path, capsys):
    from synth.__main__ import main

    out = tmp_path / "gpu"
    with pytest.raises(SystemExit) as e:
        main(["run", *ARGS, "--output_dir", str(out), "--ray_address", "auto", "--ray_gpus_per_actor", "tp"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the Ray cluster has 0 GPU(s)") and "--ray_gpus_per_actor 0" in err
    assert not out.exists()  # refused before anything was written


def test_an_unreachable_address_is_one_line(tmp_path):
    # A fresh interpreter: this session's cluster must not answer for it.
    out = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "synth", "run", *ARGS, "--output_dir", str(out),
                           "--ray_address", "127.0.0.1:9"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach a Ray cluster at --ray_address 127.0.0.1:9"), last
    assert not out.exists()
