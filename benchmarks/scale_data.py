"""Time and peak memory of the stages after tagging on a synthetic tagged set of paper scale (Pro 1M).

    python benchmarks/scale_data.py [--rows 1000000] [--steps filter stats export join]   (prints JSON)

Builds (once, cached under --data_dir) a tagged dataset directory as the tag stage writes it: shards of 10K
rows, the responses stage's columns (instruction 100-600 chars and its raw copy, response 500-4000 chars,
`messages` with a second turn in one row in ten, the generation configs) and every tagger's fields (the judge's
labels and free-text explanations, rewards, base_response 500-4000 chars, guard, language, neighbours), with
plausible distributions and some NULLs. Texts are word salad: they compress like text, not like random bytes.
Each step then runs in a fresh process, so that its `peak_rss_mb` is its own peak (VmHWM):

    filter   filters.filter_dataset with --preset (the paper's cut to its 300K rows)
    stats    stats.plot_all and stats.wandb_tables over the whole tagged set (what the tag stage's plots and
             the W&B tables of `python -m synth` read), each streaming the directory
    export   export.export of the filtered set (--export_from tagged: of the whole tagged set)
    join     tag.join_parts + summarize + plots: the tagged set split into its input (shards of 2K rows) and
             one part per tagger (shards of --part_rows; min_neighbor_distance one shard), joined again

The target (issue 11) is a peak under 4 GiB and under 5 minutes for 1M rows on 2 cores; every step reads a
batch of rows at a time, so its peak follows the batch size and the row length, not the row count.

Measured 2026-12-01, 1M rows (2.8 GB of Parquet), 2 cores shared with other work (load 3, then 5-7): filter 26 /
100 s, 2.2 / 2.1 GB; stats 30 / 39 s, 0.6 GB; export of the 300K kept 44 / 78 s, 1.2 GB; join 60 / 175 s, 0.6 /
0.5 GB. --export_from tagged (all 1M rows): 213 s, 1.0 GB. 100K rows (load 5): 11 / 14 / 20 / 14 s, 1.2 / 0.5 /
0.9 / 0.5 GB; there the versions that held every record peaked at 1.6 GB (plots), 1.8 GB (export of the 58K
kept) and 1.6 GB (join).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD_ROWS = 10_000  # the tag stage's shard_rows default
# The tag stage's taggers in the order the Pro config runs them, with the fields each writes (synth/taggers).
TAGGERS = {
    "task_category": ("task_category", "other_task_category"),
    "difficulty": ("intent", "knowledge", "difficulty"),
    "input_quality": ("quality_explanation", "input_quality"),
    "instruct_reward": ("instruct_reward", "reward_model"),
    "reward_difference": ("base_response", "base_reward", "reward_difference"),
    "llama_guard_2": ("llama_guard_2",),
    "language": ("language",),
    "min_neighbor_distance": ("min_neighbor_distance", "repeat_count", "min_similar_conversation_id"),
}
STEPS = ("filter", "stats", "export", "join")


def begin_synthetic(path: Path, stage: str, count: str, config: dict):
    """The synthetic set's dataset directory, begun afresh; None when a complete one of config["rows"] rows is
    there already (counts[count])."""
    from core import store

    ds = store.DatasetDir(path)
    if ds.complete and ds.manifest()["counts"][count] == config["rows"]:
        return None
    shutil.rmtree(path, ignore_errors=True)
    ds.begin(stage, config)
    return ds


def word_pool(rng) -> str:
    """~12M characters of word salad, drawn from `rng`: compresses like text, not like random bytes."""
    words = rng.choice(["the", "model", "data", "a", "of", "to", "answer", "question", "write", "code", "python",
                        "explain", "why", "function", "list", "value", "and", "is", "in", "for", "with", "step"],
                       size=2_000_000)
    return " ".join(words)


def _shard(rng, pool: str, lo: int, m: int):
    """Rows [lo, lo + m) of the synthetic tagged set, as an Arrow table with the tag stage's columns."""
    import numpy as np
    import pyarrow as pa

    from core.schema import DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES

    def texts(k: int, shortest: int, longest: int) -> list[str]:
        lengths = rng.integers(shortest, longest + 1, k)
        starts = rng.integers(0, len(pool) - longest, k)
        return [pool[s:s + n] for s, n in zip(starts, lengths)]

    def pick(values, p, k=m):
        return pa.array(rng.choice(np.array(values, dtype=object), size=k, p=np.array(p) / sum(p)))

    def nulls(a, share):
        return pa.array(a, mask=rng.random(len(a)) < share)

    ids = np.arange(lo, lo + m)
    ins, res = texts(m, 100, 600), texts(m, 500, 4000)
    two = rng.random(m) < 0.1  # multi-turn rows: a second user turn and answer
    more_q, more_a = texts(m, 100, 600), texts(m, 500, 4000)
    contents, offsets = [], [0]
    for i in range(m):
        contents += [ins[i], res[i]] + ([more_q[i], more_a[i]] if two[i] else [])
        offsets.append(len(contents))
    roles = pa.array(["user", "assistant"] * (len(contents) // 2))
    messages = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.StructArray.from_arrays(
        [roles, pa.array(contents)], names=["role", "content"]))
    temperature = rng.choice([1.0, 1.25], m)
    gen_input = pa.StructArray.from_arrays(
        [pa.array(temperature), pa.array(np.where(temperature > 1, 0.995, 1.0)), pa.array(np.full(m, 1024)),
         pa.array(["meta-llama/Meta-Llama-3-70B-Instruct"] * m), pa.array(["vllm"] * m), pa.array(ids * 7 + 1),
         pa.array([["<|eot_id|>"]] * m), pa.array(np.ones(m, bool))],
        names=["temperature", "top_p", "max_tokens", "input_generator", "engine", "seed", "stop", "sanitized"])
    gen_response = pa.StructArray.from_arrays(
        [pa.array(np.zeros(m)), pa.array(np.ones(m)), pa.array(np.full(m, 4096)), pa.array(np.ones(m)),
         pa.array(["meta-llama/Meta-Llama-3-70B-Instruct"] * m)],
        names=["temperature", "top_p", "max_tokens", "repetition_penalty", "output_generator"])
    other = [[str(c) for c in rng.choice(TASK_CATEGORIES, rng.integers(0, 3), replace=False)] for _ in range(m)]
    sim = np.where(rng.random(m) < 0.15, np.maximum(ids - rng.integers(0, 3, m), 0), -1)
    instruct_reward = nulls(rng.normal(-5, 8, m), 0.01)
    base_reward = nulls(rng.normal(-6, 8, m), 0.01)
    return pa.table({
        "id": ids,
        "pre_query_template": pa.array(["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"] * m),
        "instruction": ins, "raw_instruction": ins, "gen_input_configs": gen_input, "response": res,
        "messages": messages, "gen_response_configs": gen_response,
        "response_finish_reason": pick(["stop", "length"], [97, 3]),
        "task_category": pick((*TASK_CATEGORIES, None), [30, 10, 6, 5, 12, 10, 3, 3, 8, 8, 4, 1, 1]),
        "other_task_category": other,
        "intent": texts(m, 40, 120), "knowledge": texts(m, 60, 200),
        "difficulty": pick((*DIFFICULTY_LEVELS, None), [15, 35, 30, 15, 3, 2]),
        "quality_explanation": texts(m, 100, 300),
        "input_quality": pick((*QUALITY_LEVELS, None), [5, 10, 25, 38, 18, 4]),
        "instruct_reward": instruct_reward, "reward_model": pa.array(["sfairXC/FsfairX-LLaMA3-RM-v0.1"] * m),
        "base_response": texts(m, 500, 4000), "base_reward": base_reward,
        "reward_difference": pa.array(np.asarray(instruct_reward.to_numpy(zero_copy_only=False))
                                      - np.asarray(base_reward.to_numpy(zero_copy_only=False)),
                                      from_pandas=True),  # NaN -> null: no difference without both rewards
        "llama_guard_2": pick(["safe", "unsafe\nS2", "unsafe\nS6", None], [97, 1.5, 1, 0.5]),
        "language": pick(["EN", "ZH", "ES", "FR", "DE", "JA", None], [90, 3, 2, 1.5, 1.5, 1, 1]),
        "min_neighbor_distance": nulls(np.where(rng.random(m) < 0.1, 0.0, rng.uniform(0.01, 1.2, m)), 0.005),
        "repeat_count": rng.integers(0, 3, m),
        "min_similar_conversation_id": pa.array(sim, mask=sim < 0),
    })


def build(path: Path, n: int, seed: int = 0) -> None:
    """The tagged set of n rows at `path` (kept when a complete one of n rows is there)."""
    import numpy as np


    ds = begin_synthetic(path, "tagged", "records", {"benchmark": "scale_data", "rows": n, "seed": seed})
    if ds is None:
        return
    rng = np.random.default_rng(seed)
    pool = word_pool(rng)
    for k, lo in enumerate(range(0, n, SHARD_ROWS)):
        ds.write_shard(k, _shard(rng, pool, lo, min(SHARD_ROWS, n - lo)))
    ds.finish({"records": n})


def build_join_input(tagged: Path, path: Path, part_rows: int) -> None:
    """The tagged set taken apart as the tag stage holds it before its join: the input (the responses
    stage's columns, shards of 2K rows) and `parts/<tagger>/` (id + its fields, shards of part_rows)."""
    from core import store

    src = store.DatasetDir(tagged)
    n = src.num_rows()
    inp = store.DatasetDir(path / "input")
    if inp.complete and inp.manifest()["counts"]["records"] == n and (path / "parts").exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    fields = {f for fs in TAGGERS.values() for f in fs}
    inp.begin("responses", {"benchmark": "scale_data", "rows": n})
    for k, t in enumerate(src.batches(2_000, [c for c in src.columns() if c not in fields])):
        inp.write_shard(k, t)
    inp.finish({"records": n})
    for name, fs in TAGGERS.items():
        part = store.DatasetDir(path / "parts" / name)
        part.begin(f"tag:{name}", {"tagger": name})
        size = n if name == "min_neighbor_distance" else part_rows  # it needs every record at once: one shard
        for k, t in enumerate(src.batches(size, ["id", *fs])):
            part.write_shard(k, t)
        part.finish({}, fields=list(fs))


def peak_rss_mb() -> int:
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak at fork
    status = Path("/proc/self/status").read_text()
    return round(int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1]) / 1024)


def run_step(step: str, work: Path, args) -> dict:
    """One step, in this process: its seconds and counts."""
    from core import store

    tagged, filtered = work / f"tagged-{args.rows}", work / f"filtered-{args.rows}-{args.preset}"
    scratch = Path(tempfile.mkdtemp(dir=work))
    t = time.perf_counter()
    try:
        if step == "filter":
            from synth.filters import filter_dataset

            shutil.rmtree(filtered, ignore_errors=True)
            c = filter_dataset(tagged, filtered, args.preset)
            out = {"input": c["input"], "kept": c["kept"]}
        elif step == "stats":
            from synth import stats

            plots = stats.plot_all(tagged, scratch / "plots")
            mid = time.perf_counter()
            tables = stats.wandb_tables(store.DatasetDir(tagged))
            out = {"plots": len(plots), "plots_s": round(mid - t, 1), "wandb_tables": len(tables),
                   "wandb_tables_s": round(time.perf_counter() - mid, 1)}
        elif step == "export":
            from synth.export import export

            src = tagged if args.export_from == "tagged" else filtered
            c = export(src, scratch / "release", "scale-data", {})
            out = {"input": args.export_from, "records": c["records"], "shards": c["shards"],
                   "sharegpt_mb": round((scratch / "release" / "sharegpt.jsonl").stat().st_size / 2**20)}
        elif step == "join":
            from synth import stats
            from synth.tag import join_parts, summarize

            split = work / f"join-{args.rows}-{args.part_rows}"
            tagged_out = scratch / "tagged"
            store.DatasetDir(tagged_out).begin("tagged", {"benchmark": "scale_data"})
            (tagged_out / "parts").symlink_to(split / "parts")
            parts = {name: store.DatasetDir(split / "parts" / name).manifest() for name in TAGGERS}
            profile = join_parts(split / "input", tagged_out, parts, SHARD_ROWS)
            counts = summarize(profile, parts)
            stats.plot_all(profile, tagged_out / "plots")
            out = {"records": counts["records"], "shards": len(store.DatasetDir(tagged_out).files()),
                   "coverage_min": min(counts["coverage"].values())}
        else:
            raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"step": step, "seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": peak_rss_mb(), **out}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)  # Pro 1M (the paper's Pro sets start there)
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    ap.add_argument("--preset", default="pro-300k-filtered", help="the filter step's preset (python -m synth presets)")
    ap.add_argument("--export_from", default="filtered", choices=["filtered", "tagged"])
    ap.add_argument("--part_rows", type=int, default=256, help="rows per tagger part shard (tag_batch_size)")
    ap.add_argument("--data_dir", type=Path, default=Path(tempfile.gettempdir()) / "magpie-scale-data")
    ap.add_argument("--_step", help=argparse.SUPPRESS)  # internal: run one step in this process
    args = ap.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args._step:
        print(json.dumps(run_step(args._step, args.data_dir, args)))
        return
    tagged = args.data_dir / f"tagged-{args.rows}"
    t = time.perf_counter()
    build(tagged, args.rows)
    if "join" in args.steps:
        build_join_input(tagged, args.data_dir / f"join-{args.rows}-{args.part_rows}", args.part_rows)
    build_s = time.perf_counter() - t
    if "export" in args.steps and args.export_from == "filtered" and "filter" not in args.steps:
        args.steps.insert(0, "filter")  # export reads its output
    results = []
    for step in [s for s in STEPS if s in args.steps]:
        cmd = [sys.executable, __file__, "--_step", step, "--rows", str(args.rows), "--preset", args.preset,
               "--export_from", args.export_from, "--part_rows", str(args.part_rows), "--data_dir", str(args.data_dir)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode:
            results.append({"step": step, "failed": run.returncode, "stderr_tail": run.stderr[-800:]})
        else:
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    size = sum(p.stat().st_size for p in tagged.rglob("*.parquet"))
    ok = [r for r in results if "failed" not in r]
    print(json.dumps({"rows": args.rows, "tagged_parquet_gb": round(size / 2**30, 2), "build_s": round(build_s, 1),
                      "preset": args.preset, "steps": results,
                      "total_s": round(sum(r["seconds"] for r in ok), 1),
                      "max_peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None)}, indent=2))


if __name__ == "__main__":
    main()
