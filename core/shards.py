"""A model stage's shards, computed in this process or by engine actors on a Ray cluster (core/cluster.py).

A stage splits its work into shards, the unit of resume, and names a *shard function* that turns one shard's
spec into its records: `fn(engine, spec, *args) -> (records, meta)`, a module-level function, which pickles by
reference: an actor on another machine imports the same code. Whoever computes shard k writes it, whole
(DatasetDir.write_shard), into the stage's output directory: with or without Ray, and whatever the number of
actors, the output is the same directory, shard for shard, and a rerun skips the shards on disk.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from . import store


@dataclass(frozen=True)
class ShardWork:
    """One stage's shard function and what it needs besides the engine: everything here is pickled to the actors."""
    out_dir: str
    fn: Callable[..., tuple[list[dict], dict]]  # a module-level function, e.g. core.answer.answer_shard
    args: tuple = ()
    role: Any = None  # the ModelRole whose engine `fn` gets (built once per process); None: fn builds what it needs
    tensor_parallel_size: int | None = None  # GPUs an actor needs when `fn` builds its own models (default: role's)

    def compute(self, engine, spec) -> tuple[list[dict], dict]:
        return self.fn(engine, spec, *self.args)

    def target(self, key) -> tuple[store.DatasetDir, int]:
        """Where shard `key` goes: k (the output directory's shard k) or (subfolder, k) (the tag stage's parts)."""
        sub, k = key if isinstance(key, tuple) else ("", key)
        return store.DatasetDir(Path(self.out_dir) / sub), k

    def write(self, key, spec, engine) -> None:
        ds, k = self.target(key)
        records, meta = self.compute(engine, spec)
        ds.write_shard(k, records, meta)


def run(work: ShardWork, units: list[tuple[Any, Any, int]], engine=None, *, desc: str, unit: str,
        cluster=None, in_flight: int | None = None) -> int:
    """Compute and write the shards of `units` ((key, spec, items); a key is k or (subfolder, k), see
    ShardWork.target) that are not on disk yet: here on `engine`, or on `cluster` (a core.cluster.Cluster) by
    actors that build `work.role`'s engine. The progress bar counts items and starts at the work already done.
    `in_flight`: shards computed at once where `work.fn` builds its own engines (default: the engine's own
    `in_flight`). Returns the number of shards computed."""
    todo = pending(work, units)
    items = {key: n for key, _, n in todo}
    bar = tqdm(total=sum(n for *_, n in units), initial=sum(n for *_, n in units) - sum(items.values()),
               desc=desc, unit=unit)
    try:
        if in_flight is None:
            in_flight = getattr(engine, "in_flight", 1) if engine is not None else 1
        in_flight = in_flight if cluster is None and len(todo) > 1 else 1
        if cluster is None and in_flight > 1:
            # Several shards at once on one engine that batches calls from threads together (vLLM): the call size
            # no longer drains the batch at every shard's longest answer; each shard is written as it completes.
            from concurrent.futures import ThreadPoolExecutor

            from .engines.vllm import serving  # this thread steps the vLLM engines the shards wait on

            with ThreadPoolExecutor(max_workers=in_flight) as pool, serving():
                futures = {pool.submit(work.write, key, spec, engine): n for key, spec, n in todo}  # in order
                for f in _as_done(futures):
                    f.result()  # a failed shard stops the stage (the finished ones stay on disk)
                    bar.update(futures[f])
        elif cluster is None:
            for key, spec, n in todo:
                work.write(key, spec, engine)
                bar.update(n)
        else:
            for key in cluster.map_shards(work, [(key, spec) for key, spec, _ in todo], desc=desc):
                bar.update(items[key])
    finally:
        bar.close()
    return len(todo)


def _as_done(futures):
    from .engines.vllm import steps_while_waiting

    try:
        yield from steps_while_waiting(futures)
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def pending(work: ShardWork, units: list[tuple[Any, Any, int]]) -> list[tuple[Any, Any, int]]:
    """The units whose shard is not on disk yet (a shard that failed its check was removed by `begin`): the one
    resume rule of every stage."""
    on_disk: dict[Path, set] = {}

    def done(key) -> bool:
        ds, k = work.target(key)
        return k in on_disk.setdefault(ds.path, set(ds.shards()))

    return [(key, spec, n) for key, spec, n in units if not done(key)]


def row_ranges(n: int, size: int) -> list[tuple[int, tuple[int, int], int]]:
    """Units over the rows of an input set: shard k holds input rows [k*size, (k+1)*size)."""
    size = max(size, 1)
    return [(k, (s, min(s + size, n)), min(s + size, n) - s) for k, s in enumerate(range(0, n, size))]


_INPUTS: dict[str, store.DatasetDir] = {}


def input_rows(in_dir, start: int, stop: int, columns: list[str] | None = None) -> list[dict]:
    """Rows [start, stop) of an input directory; the process keeps one reader per directory, so consecutive
    shards read each input file once."""
    key = str(in_dir)
    if key not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[key] = store.DatasetDir(in_dir)
    return _INPUTS[key].rows(start, stop, columns)


def write_stage(ds: store.DatasetDir, kind: str, config: dict, prepare: Callable[[], tuple], counts: Callable[[dict],
                dict], engine=None, *, desc: str, unit: str, cluster=None) -> dict:
    """A dataset directory written shard by shard, the skeleton of every model stage: reuse a finished one of this
    `config` (nothing prepared, no model loaded) -> `prepare()` -> begin -> the shards not on disk yet -> `counts`
    of the shards' totals -> finish. `prepare()` returns (work, units, manifest fields); it is where a stage first
    touches its engine (the template, the stop ids). Returns the counts with `seconds` and `tokens_this_run`."""
    if (done := ds.reusable(config)) is not None:  # the engine is not touched: a lazy one never loads
        return {**done["counts"], "reused": True}
    work, units, manifest = prepare()
    ds.begin(kind, config, **manifest)
    t0, before = time.perf_counter(), ds.shard_totals().get("tokens", 0)
    run(work, units, engine, desc=desc, unit=unit, cluster=cluster)
    result = counts(ds.shard_totals())
    seconds = time.perf_counter() - t0
    ds.finish(result, seconds_this_run=round(seconds, 2))
    return {**result, "seconds": seconds, "tokens_this_run": result.get("tokens", 0) - before}
