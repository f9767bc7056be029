"""Time and peak memory of the filter stage on a synthetic tagged set of paper scale (Air 3M, Pro 1M).

    python benchmarks/filter.py [--rows 1000000] [--which new old] [--old_rows 300000]   (prints JSON)

Builds (once, cached under --data_dir) a tagged dataset directory of N rows as Parquet shards:
id, instruction (~200 chars), response (~1500 chars), messages (list<struct<role, content>>,
one in ten rows with two turns), pre_query_template, gen_input_configs and the tags with
plausible distributions and some NULLs. Then runs `filter_dataset` with the pro-300k-filtered and
air-300k-filtered presets (size 300K), each in a fresh process so that `peak_rss_mb`
is that run's own peak (VmHWM). `old` is the AST interpreter that loaded every row as a dict
(synth/filters.py at --old_rev, imported from a temporary copy); its memory grows with the input
(measured 6.5 GB at 1M rows), so --old_rows can run it on a smaller set.

Measured on 2 shared cores (load 3-6), 1M rows: new 39 s / 2.1 GB (pro), 32 s / 1.9 GB (air); old
53 s / 6.5 GB, 50 s / 6.2 GB. 3M rows, new: 50 s / 2.3 GB, 39 s / 2.1 GB; old not run (~18 GB by
its 0.3M and 1M points).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OLD_REV = "decfaff62a4603e5559408d35d64dd20e7de0653"  # the last commit with the per-dict AST interpreter
PRESETS = ("pro-300k-filtered", "air-300k-filtered")


def build(path: Path, n: int, shard_rows: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from scale_data import begin_synthetic, word_pool  # benchmarks/ (this script's folder) is on sys.path

    from core.schema import DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES

    ds = begin_synthetic(path, "tag", "rows", {"benchmark": "filter", "rows": n, "seed": seed})
    if ds is None:
        return
    rng = np.random.default_rng(seed)
    pool = word_pool(rng)

    def texts(k: int, mean: int) -> list[str]:
        lengths = np.clip(rng.normal(mean, mean / 3, k), 10, 4 * mean).astype(int)
        starts = rng.integers(0, len(pool) - lengths.max(), k)
        return [pool[s:s + m] for s, m in zip(starts, lengths)]

    def pick(values, p, k):
        return pa.array(rng.choice(np.array(values, dtype=object), size=k, p=np.array(p) / sum(p)))

    for k, lo in enumerate(range(0, n, shard_rows)):
        m = min(shard_rows, n - lo)
        ids = np.arange(lo, lo + m)
        ins, res = texts(m, 200), texts(m, 1500)
        two = rng.random(m) < 0.1  # multi-turn rows: two more turns
        more_q, more_a = texts(m, 100), texts(m, 800)
        contents, roles, offsets = [], [], [0]
        for i in range(m):
            turn = [ins[i], res[i]] + ([more_q[i], more_a[i]] if two[i] else [])
            contents += turn
            roles += ["user", "assistant"] * (len(turn) // 2)
            offsets.append(len(contents))
        messages = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.StructArray.from_arrays(
            [pa.array(roles), pa.array(contents)], names=["role", "content"]))

        def nulls(a, share):
            return pa.array(a, mask=rng.random(len(a)) < share)

        sim = np.where(rng.random(m) < 0.15, np.maximum(ids - rng.integers(0, 3, m), 0), -1)
        table = pa.table({
            "id": ids, "instruction": ins, "response": res, "messages": messages,
            "pre_query_template": pa.array(["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"] * m),
            "gen_input_configs": pa.StructArray.from_arrays(
                [pa.array(np.full(m, 1.0)), pa.array(np.full(m, 1.0))], names=["temperature", "top_p"]),
            "task_category": pick(TASK_CATEGORIES, [30, 10, 6, 5, 12, 10, 3, 3, 8, 8, 4, 1], m),
            "difficulty": pick((*DIFFICULTY_LEVELS, None), [15, 35, 30, 15, 3, 2], m),
            "input_quality": pick((*QUALITY_LEVELS, "Good", None), [5, 10, 25, 38, 18, 2, 2], m),
            "instruct_reward": nulls(rng.normal(-5, 8, m), 0.01),
            "reward_difference": nulls(rng.normal(0.5, 2, m), 0.01),
            "llama_guard_2": pick(["safe", "unsafe\nS2"], [98, 2], m),
            "language": pick(["EN", "ZH", "ES", "FR"], [94, 3, 2, 1], m),
            "min_neighbor_distance": nulls(np.where(rng.random(m) < 0.1, 0.0, rng.uniform(0.01, 1.2, m)), 0.005),
            "repeat_count": rng.integers(0, 3, m),
            "min_similar_conversation_id": pa.array(sim, mask=sim < 0),
        })
        pq.write_table(table, ds.shard_path(k))
    ds.finish({"rows": n})


def load_old(rev: str):
    """The interpreter at `rev`, imported from a temporary copy with its relative imports made absolute."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:synth/filters.py"], check=True,
                         capture_output=True, text=True).stdout
    src = src.replace("from . import store", "from synth import store").replace("from .schema", "from core.schema")
    path = Path(tempfile.mkdtemp()) / "filters_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("filters_old", path)
    mod = sys.modules["filters_old"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


def peak_rss_mb() -> int:
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak at fork (the data build).
    status = Path("/proc/self/status").read_text()
    return round(int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1]) / 1024)


def measure(which: str, data: Path, preset: str, size: int, rev: str) -> dict:
    if which == "old":
        filter_dataset = load_old(rev).filter_dataset
    else:
        from synth.filters import filter_dataset
    base_mb = peak_rss_mb()
    out = Path(tempfile.mkdtemp()) / "filtered"
    t = time.perf_counter()
    counts = filter_dataset(data, out, preset, size=size)
    seconds = time.perf_counter() - t
    shutil.rmtree(out.parent)
    return {"which": which, "preset": preset, "rows": counts["input"], "kept": counts["kept"],
            "seconds": round(seconds, 2), "rows_per_s": round(counts["input"] / seconds),
            "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base_mb}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)  # Pro 1M (the paper's Pro sets start there)
    ap.add_argument("--old_rows", type=int, help="rows for the old interpreter (default: --rows)")
    ap.add_argument("--shard_rows", type=int, default=50_000, help="rows per input shard")
    ap.add_argument("--size", type=int, default=300_000)  # the paper's 300K sets
    ap.add_argument("--which", nargs="+", default=["new", "old"], choices=["new", "old"])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--old_rev", default=OLD_REV)
    ap.add_argument("--data_dir", type=Path, default=Path(tempfile.gettempdir()) / "magpie-filter-bench")
    ap.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)  # internal: which, data, preset in this process
    args = ap.parse_args()
    if args._one:
        which, data, preset = args._one
        print(json.dumps(measure(which, Path(data), preset, args.size, args.old_rev)))
        return
    results = []
    for which in args.which:
        n = args.old_rows or args.rows if which == "old" else args.rows
        data = args.data_dir / f"tagged-{n}"
        t = time.perf_counter()
        build(data, n, args.shard_rows)
        build_s = time.perf_counter() - t
        for preset in args.presets:
            cmd = [sys.executable, __file__, "--_one", which, str(data), preset, "--size", str(args.size),
                   "--old_rev", args.old_rev]
            run = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if run.returncode:
                results.append({"which": which, "preset": preset, "rows": n, "failed": run.returncode,
                                "stderr_tail": run.stderr[-500:]})
            else:
                results.append(json.loads(run.stdout.strip().splitlines()[-1]) | {"build_s": round(build_s, 1)})
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"shard_rows": args.shard_rows, "size": args.size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
