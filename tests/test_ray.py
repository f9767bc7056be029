"""The model stages on a real local Ray cluster (core/cluster.py): the records of a single-process run, an actor
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
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from core import store

ray = pytest.importorskip("ray")

# Small but real: 12 instructions in 3 shards, 3 responses per shard, two taggers (a SmolLM2 judge, language).
# The actors' start and model load (~15 s a stage) is most of each run's time; the work is kept short.
ARGS = ["--config", TINY, "--stages", "instructions", "responses", "tag", "--total_prompts", "12", "--n", "4",
        "--hf_batch_size", "4", "--max_tokens", "48", "--response_max_tokens", "24", "--response_batch_size", "3",
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


def assert_same_run(run, single, stages=STAGES):
    """Every stage complete, with the single-process run's shards and records (ids, texts, tags)."""
    for s in stages:
        got, want = store.DatasetDir(run / s), store.DatasetDir(single / s)
        assert got.complete, s
        assert got.shards() == want.shards(), s
        rows = got.records()
        assert [r["id"] for r in rows] == [r["id"] for r in want.records()], s  # nothing lost, nothing twice
        assert rows == want.records(), s
    if "tagged" in stages:  # tagged for real: the judge's field on every record, languages detected
        tagged = store.DatasetDir(run / "tagged").records()
        assert all("task_category" in r for r in tagged) and any(r["language"] for r in tagged)
        assert store.DatasetDir(run / "tagged" / "parts" / "task_category").complete


def _map_workers() -> list:
    """This session's Ray Data actor processes (children of our raylet), by their process title."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "MapWorker" in " ".join(p.cmdline() or [p.name()])]


def test_two_actors_killed_actor_and_driver_write_the_records_of_one_process(cluster, single, tmp_path):
    """One job on two actors, two kills: an actor SIGKILLed once step 1 has its first shard (Ray restarts it and
    redoes its shard), then the driver SIGKILLed once step 2 has two shards. The same command run again finishes the
    job, tag stage included, with exactly the single-process run's shards and records; a third run finds every stage
    complete and sends nothing to the cluster."""
    out = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address  # the subprocess drives this session's cluster
    argv = ["run", *ARGS, "--output_dir", str(out), "--ray_address", address, "--ray_actors", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-m", "synth", *argv], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        killed = []
        for path in (out / "instructions" / "data" / "part-00000.parquet",
                     out / "responses" / "data" / "part-00001.parquet"):
            while not path.exists() and driver.poll() is None:
                time.sleep(0.05)
            assert path.exists(), driver.stderr.read()[-2000:]
            if not killed:  # an actor of the driver's job (a child of this session's raylet)
                actor = next(iter(_map_workers()), None)
                assert actor is not None, "no actor was running when step 1 had its first shard"
                os.kill(actor.pid, signal.SIGKILL)
                killed.append(actor.pid)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    assert store.DatasetDir(out / "instructions").complete  # finished despite its killed actor
    assert not store.DatasetDir(out / "responses").complete
    done = subprocess.run([sys.executable, "-m", "synth", *argv], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on 2 actor(s)" in done.stderr  # the shards went to two actors
    assert_same_run(out, single)
    again = subprocess.run([sys.executable, "-m", "synth", *argv], cwd=ROOT, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "actor(s)" not in again.stderr, again.stderr[-2000:]
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


def test_an_output_dir_the_workers_do_not_see_is_one_line(cluster, tmp_path):
    """The driver in a mount namespace of its own, its output_dir on a tmpfs there: the cluster's nodes (this
    session's, outside it) see an empty folder, as workers do a driver's local disk."""
    hidden = tmp_path / "local-disk"
    hidden.mkdir()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here (needs CAP_SYS_ADMIN): no driver-only folder can be made")
    address = ray.get_runtime_context().gcs_address
    cmd = " ".join([f"mount -t tmpfs none {hidden} &&", sys.executable, "-m", "synth", "run", *ARGS,
                    "--output_dir", str(hidden / "run"), "--ray_address", address])
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: output_dir {hidden / 'run'} is not usable from Ray node(s)"), last
    assert "mounts at the same path" in last
    assert not any(hidden.iterdir())  # and on the real disk nothing was written


# -- engine actors: a fake engine that leaves files behind, so the actors' own processes can be inspected ----------
@dataclass
class _FakeRole:
    out: str
    model: str = "fake"
    engine: str = "hf"
    tensor_parallel_size: int = 1

    def build(self):
        Path(self.out, f"built-{os.getpid()}").write_text("")
        return _FakeEngine(self.out)


class _FakeEngine:
    def __init__(self, out: str):
        self.out = out

    def close(self):
        Path(self.out, f"closed-{os.getpid()}").write_text("")


@dataclass
class _EnvWork:
    """A ShardWork that writes, per shard, the actor's pid and what CUDA_VISIBLE_DEVICES it runs with."""
    out_dir: str
    role: _FakeRole
    tensor_parallel_size: int | None = None

    def write(self, key, spec, engine):
        assert isinstance(engine, _FakeEngine)
        seen = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        Path(self.out_dir, f"shard-{key}").write_text(f"{os.getpid()} {seen}")


def test_an_actor_closes_its_engine_when_deleted(monkeypatch, tmp_path):
    from core.cluster import ShardActor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # restored after the test
    actor = ShardActor(_EnvWork(str(tmp_path), _FakeRole(str(tmp_path))), threads=0, gpus=1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # a GPU actor keeps the GPUs Ray gave it
    assert not list(tmp_path.glob("closed-*"))
    del actor
    assert [p.name for p in tmp_path.glob("closed-*")] == [f"closed-{os.getpid()}"]
    ShardActor(_EnvWork(str(tmp_path), _FakeRole(str(tmp_path))), threads=0, gpus=0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_zero_gpu_actors_see_no_gpu_and_close_their_engine_when_the_stage_ends(cluster, tmp_path):
    """On the real cluster: two CPU actors (this cluster has no GPU) run with CUDA_VISIBLE_DEVICES blank, which
    Ray 2.60 no longer sets for them, and each closes the engine it built once Ray Data ends the pool (an actor
    may build one and get no shard)."""
    from ray import cloudpickle

    from core.cluster import Cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    work = _EnvWork(str(tmp_path), _FakeRole(str(tmp_path)))
    keys = list(Cluster("auto", actors=2).map_shards(work, [(0, None), (1, None)], desc="env"))
    assert sorted(keys) == [0, 1]
    seen = [(tmp_path / f"shard-{k}").read_text().split(" ", 1) for k in keys]
    assert all(env == "" for _, env in seen), seen
    def pids(what):
        return {p.name.removeprefix(f"{what}-") for p in tmp_path.glob(f"{what}-*")}

    writers = {pid for pid, _ in seen}
    deadline = time.monotonic() + 120  # the pool is released in the background after the last shard
    while not writers <= pids("closed") == pids("built") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert writers <= pids("closed") == pids("built")
