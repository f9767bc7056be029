"""Ray: the model stages' shards computed by engine actors on a cluster (`--ray_address`).

Ray Data runs the job: a dataset of shard specs, mapped by a fixed pool of actors (`ActorPoolStrategy`), each of
which builds its model role's engine once and then takes one shard at a time. An actor writes each shard whole
into the stage's output directory, which every node must see at the same path (a network filesystem); the
driver only collects shard numbers for the progress bar. Ray Data restarts a dead actor and retries its shard
(`max_restarts=-1`, `max_task_retries=-1`, its defaults for actor pools), and a shard is renamed into place only
once written, so a killed actor loses nothing and writes nothing twice. A killed driver takes its actors with it;
the same command run again skips the shards on disk.

Records are the same as a single-process run of the same config: shard k is the same computation wherever it
runs. The hf engine's sums are split by torch's thread count, so its (bf16) text is equal for equal threads:
an actor runs `ray_cpus_per_actor` threads.

An actor ends by closing its engine: vLLM's tensor-parallel workers are processes of their own, whose GPU memory
would otherwise outlive the stage. An actor given no GPU sees none (Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for
it, so it would see every GPU of its node, those of the GPU actors too).
"""
from __future__ import annotations

import os
import pickle
import sys
import uuid
from pathlib import Path

import numpy as np

LOCAL = "local"


class ClusterError(RuntimeError):
    """A cluster that cannot run the job: unreachable, too small, or not seeing the output directory."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray_address needs Ray: pip install 'ray[data]>=2.40' (or drop --ray_address to run "
                           "in this process)") from None
    return ray


class Cluster:
    """A connection to a Ray cluster and how the stages use it (RunArgs' ray_* keys)."""

    def __init__(self, address: str, actors: int | None = None, cpus_per_actor: float = 1.0,
                 gpus_per_actor: str = "auto"):
        self.address, self.actors = address, actors
        self.cpus_per_actor, self.gpus_per_actor = cpus_per_actor, gpus_per_actor
        self._checked: set[str] = set()

    @classmethod
    def from_args(cls, run) -> Cluster | None:
        if not run.ray_address:
            return None
        return cls(run.ray_address, run.ray_actors, run.ray_cpus_per_actor, run.ray_gpus_per_actor)

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster (or start a local one): once per process; a test's own `ray.init` is reused."""
        ray = _ray()
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kw = {"include_dashboard": False, "log_to_driver": True}
        if self.address == LOCAL:
            from .gpus import count

            # One logical CPU above the cores: actors that take every CPU slot leave none for Ray Data's own
            # tasks, and the job waits forever (ray-project/ray#44687). The GPUs the project may use (MAGPIE_GPUS).
            kw["num_cpus"], kw["num_gpus"] = (os.cpu_count() or 1) + 1, count()
        try:
            _reachable(self.address)
            ray.init(address=self.address, **kw)
        except Exception as e:  # ConnectionError, a timeout, a bad address: ray raises several kinds
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClusterError(f"cannot reach a Ray cluster at --ray_address {self.address}: {why}; start one "
                               "(ray start --head), pass its address (host:6379 or ray://host:10001), or use "
                               "--ray_address local") from None
        res = ray.cluster_resources()
        print(f"[ray] {self.address}: {len(self.nodes())} node(s), {res.get('CPU', 0):g} CPU, "
              f"{res.get('GPU', 0):g} GPU", file=sys.stderr)

    def nodes(self) -> list[dict]:
        return [n for n in _ray().nodes() if n.get("Alive")]

    # -- checks ---------------------------------------------------------------------------
    def layout(self, what: str, tensor_parallel_size: int = 1, gpu: bool = True) -> tuple[int, float, float]:
        """(actors, CPUs per actor, GPUs per actor) for a model `what` on this cluster; ClusterError when it
        cannot hold one actor. `gpu`: whether the engine can use GPUs at all (an openai client cannot)."""
        res = _ray().cluster_resources()
        cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
        want = self.gpus_per_actor
        if want == "tp":
            per_gpu = float(tensor_parallel_size)
        elif want == "auto":
            per_gpu = float(tensor_parallel_size) if gpu and gpus >= tensor_parallel_size else 0.0
        else:
            per_gpu = float(want)
        if per_gpu > gpus:
            raise ClusterError(
                f"the Ray cluster has {gpus:g} GPU(s); {what} needs {per_gpu:g} per actor (ray_gpus_per_actor "
                f"{want}, tensor_parallel_size {tensor_parallel_size}): add GPU workers (ray start --address <head> "
                "--num-gpus N) or set --ray_gpus_per_actor 0 to run on CPU slots")
        per_cpu = 1.0 if per_gpu else self.cpus_per_actor
        # One CPU slot is left to Ray Data's own tasks (see connect).
        fit = int((cpus - 1) // per_cpu)
        if per_gpu:
            fit = min(fit, int(gpus // per_gpu))
        if fit < 1:
            raise ClusterError(f"the Ray cluster has {cpus:g} CPU slot(s); an actor for {what} takes {per_cpu:g} and "
                               "Ray Data needs one more: add workers or lower --ray_cpus_per_actor")
        n = fit if self.actors is None else self.actors
        if n > fit:
            print(f"[ray] {n} actors asked, the cluster holds {fit} for {what}: running {fit}", file=sys.stderr)
            n = fit
        return n, per_cpu, per_gpu

    def check_storage(self, out_dir) -> None:
        """Every node must see `out_dir` at the same path and write to it: one probe file, read by a task pinned to
        each node. Once per directory."""
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        out = Path(out_dir)
        if str(out) in self._checked:
            return
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".ray-probe-{uuid.uuid4().hex[:8]}"
        probe.write_text(probe.name)
        try:
            look = ray.remote(num_cpus=0)(_sees)
            nodes = self.nodes()
            refs = [look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe)) for n in nodes]
            blind = [f"{n['NodeManagerAddress']} ({why})" for n, why in zip(nodes, ray.get(refs)) if why]
        finally:
            probe.unlink(missing_ok=True)
        if blind:
            raise ClusterError(f"output_dir {out} is not usable from Ray node(s) {', '.join(blind)}: actors write "
                               "their shards there; put it on storage every node mounts at the same path (NFS, a "
                               "shared disk) and pass that path")
        self._checked.add(str(out))

    # -- the job ----------------------------------------------------------------------------
    def map_shards(self, work, todo: list[tuple[object, object]], desc: str = ""):
        """Compute `todo` ((key, spec)) of `work` (a core.shards.ShardWork) on actors; yields each shard's key as
        its file is written."""
        if not todo:
            return
        ray = _ray()
        self.connect()
        self.check_storage(work.out_dir)
        role = work.role
        tp = work.tensor_parallel_size or (role.tensor_parallel_size if role is not None else 1)
        gpu = role is None or role.engine != "openai"
        n, per_cpu, per_gpu = self.layout(role.model if role is not None else desc, tp, gpu)
        n = min(n, len(todo))
        print(f"[ray] {desc}: {len(todo)} shard(s) on {n} actor(s), {per_cpu:g} CPU + {per_gpu:g} GPU each",
              file=sys.stderr)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the stage's own bar counts items
        ctx.print_on_execution_start = False
        ctx.raise_original_map_exception = True  # a shard's error as itself, not wrapped twice
        # Ray Data fails a job whose operators make no progress for 30 min; one shard of a 70B model's 4096-token
        # answers can take longer. Progress is the shards on disk, and a rerun resumes: no deadline.
        ctx.execution_no_progress_timeout_s = -1
        # A block per shard, so that any actor takes any shard; keys and specs travel pickled.
        data = ray.data.from_items([{"item": pickle.dumps(unit)} for unit in todo], override_num_blocks=len(todo))
        out = data.map_batches(
            ShardActor, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"work": work, "threads": 0 if per_gpu else max(1, int(per_cpu)), "gpus": per_gpu},
            num_cpus=per_cpu, num_gpus=per_gpu)
        for row in out.iter_rows():
            yield pickle.loads(row["key"])


def _reachable(address: str, seconds: float = 10.0) -> None:
    """A host:port address (GCS, or ray:// client server) must accept a TCP connection: ray.init would retry a
    dead one for minutes before saying so."""
    if address in ("auto", LOCAL):
        return
    import socket

    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not auto, local, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise ConnectionError(f"{host}:{port} does not answer ({e.strerror or e})") from None


def _sees(path: str) -> str:
    """On a node: '' when `path` is there and its folder writable, else why not."""
    p = Path(path)
    if not p.exists():
        return f"{p.parent} not found or without the probe file"
    try:
        mine = p.with_name(p.name + f".{os.getpid()}")
        mine.write_text("")
        mine.unlink()
    except OSError as e:
        return f"cannot write: {e.strerror}"
    return ""


class ShardActor:
    """A Ray Data actor: one engine, built once; each call computes one shard and writes it. Ray Data deletes it
    when the actor ends gracefully (its stage's shards are done), which closes the engine."""

    def __init__(self, work, threads: int, gpus: float = 0.0):
        self.engine = None
        if not gpus:  # before anything initializes CUDA, here or in an engine's subprocess
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.work = work
        self.engine = work.role.build() if work.role is not None else None

    def __call__(self, batch: dict) -> dict:
        keys = []
        for item in batch["item"]:
            key, spec = pickle.loads(item)
            self.work.write(key, spec, self.engine)
            keys.append(pickle.dumps(key))
        return {"key": np.array(keys, dtype=object)}

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()

    __del__ = close


class DriverView:
    """What a stage's driver needs of its engine while actors run the model: the tokenizer (template, stop ids)
    and the engine's name. No weights load here: the driver of a GPU cluster may have no GPU."""

    def __init__(self, role):
        from .engines.base import EngineInfo

        self.role, self.info, self._tokenizer = role, EngineInfo(role.engine, role.model), None
        self.template_kwargs = role.template_kwargs()  # as the actors' engines render (Engine.template_kwargs)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from .models import resolve

            self._tokenizer = AutoTokenizer.from_pretrained(resolve(self.role.model),
                                                            trust_remote_code=self.role.trust_remote_code)
            if self.role.chat_template:  # the role's own template file, as registry.get_engine gives the actors
                from .templates import read_chat_template_file

                self._tokenizer.chat_template = read_chat_template_file(self.role.chat_template)["chat_template"]
        return self._tokenizer

    def close(self) -> None:
        pass
