"""The tag stage: run the configured taggers over a dataset directory and join their fields.

Each tagger writes its own resumable sub-directory (`<out>/parts/<tagger>/`, shards of `id` plus
its fields), so a crash loses at most one batch of one tagger and a finished tagger is never
run (or even loaded) again. The tagged set (`<out>/data/`) is the input joined with every
tagger's fields; its manifest holds coverage, parse failures and tag distributions, and
`<out>/plots/` the histograms.
"""
from __future__ import annotations

import collections
import time
from pathlib import Path

from . import store
from .schema import CATEGORICAL
from .taggers import get_tagger


def _run_tagger(name: str, kwargs: dict, records: list[dict], part_dir: Path, batch_size: int, input_hash: str) -> dict:
    part = store.DatasetDir(part_dir)
    part.begin(f"tag:{name}", {"tagger": name, "kwargs": kwargs, "input_config_hash": input_hash})
    if part.complete:
        return part.manifest()
    tagger = get_tagger(name, **kwargs)
    fields = tagger.fields
    size = len(records) if tagger.batch_size is None else min(batch_size, tagger.batch_size or batch_size)
    for k, batch in part.pending(records, size, f"tag {name}", "rec"):
        before = dict(tagger.stats)
        tags = tagger.tag(batch)
        rows = [{"id": r["id"], **{f: t.get(f) for f in fields}} for r, t in zip(batch, tags)]
        delta = {s: v - before.get(s, 0) for s, v in tagger.stats.items()}
        part.write_shard(k, rows, {"stats": delta})
    return part.finish(part.shard_totals().get("stats", {}), fields=list(fields), tagger_info=tagger.info())


def tag_dataset(in_dir, out_dir, taggers: dict[str, dict], batch_size: int = 256, shard_rows: int = 10_000,
                plots: bool = True) -> dict:
    """`taggers`: name -> constructor kwargs, run in order. Returns counts for the summary."""
    src = store.DatasetDir(in_dir)
    src_manifest = src.require_complete()
    records = src.records()
    out = store.DatasetDir(out_dir)
    config = {"taggers": taggers, "batch_size": batch_size, "input_config_hash": src_manifest["config_hash"]}
    out.begin("tagged", config, input=str(in_dir))
    t0 = time.perf_counter()
    parts = {}
    for name, kwargs in taggers.items():
        parts[name] = _run_tagger(name, kwargs, records, Path(out_dir) / "parts" / name, batch_size,
                                  src_manifest["config_hash"])
    # Join: every record gets every tagger's fields (None where a tagger could not tag it).
    joined = {r["id"]: dict(r) for r in records}
    for name, m in parts.items():
        part = store.DatasetDir(Path(out_dir) / "parts" / name)
        for row in part.records():
            joined[row["id"]].update({f: row.get(f) for f in m["fields"]})
        for r in joined.values():
            for f in m["fields"]:
                r.setdefault(f, None)
    tagged = [joined[r["id"]] for r in records]
    for stale in out.shards():  # the join is rewritten whole: cheap next to tagging itself
        out.shard_path(stale).unlink(missing_ok=True)
        out.empty_marker(stale).unlink(missing_ok=True)
    for k in range(0, max(len(tagged), 1), shard_rows):
        out.write_shard(k // shard_rows, tagged[k:k + shard_rows])
    counts = summarize(tagged, parts)
    plot_files = []
    if plots:
        from . import stats

        plot_files = [str(p) for p in stats.plot_all(tagged, Path(out_dir) / "plots")]
    out.finish(counts, taggers_info={n: m.get("tagger_info", {}) for n, m in parts.items()}, plots=plot_files)
    counts["seconds"] = time.perf_counter() - t0
    return counts


def summarize(tagged: list[dict], parts: dict) -> dict:
    counts = {"records": len(tagged), "coverage": {}, "stats": {}, "distributions": {}}
    for name, m in parts.items():
        counts["stats"][name] = m.get("counts", {})
        for f in m["fields"]:
            counts["coverage"][f] = sum(r.get(f) is not None for r in tagged)
    for f in CATEGORICAL:
        if any(f in r for r in tagged):
            counts["distributions"][f] = dict(collections.Counter(
                str(r.get(f)) if r.get(f) is not None else "untagged" for r in tagged).most_common())
    return counts
