"""Cost of the min_neighbor_distance tags (exact FAISS kNN) at dataset scale on this machine.

    python benchmarks/neighbors.py [--sizes 100000 1000000] [--k 500] [--budget_s 200]   (prints JSON)

Random unit vectors stand in for instruction embeddings (384-d: the tiny profile's MiniLM), so
embedding time is not included: only `nearest_neighbors` (index build + batched exact search +
the tags). Exact search is all-pairs: N^2 * d * 2 flops, 7.7e12 at 100k but 7.7e14 at 1M, which
is hours on 2 CPU cores. So each size first times one search batch; when the whole run would take
longer than --budget_s, it searches a random sample of queries against the full index (same cost
per query) and scales the time to N, saying so in `extrapolated_from_queries`.

Each size runs in a fresh process so that `peak_rss_mb` (ru_maxrss) is that size's own peak.

`--index ivf` (or auto above 200K rows) measures the approximate IVF-Flat search instead, with its recall@10
against exact search on 1000 queries. `--data clustered` draws the vectors around 10K topic centres, as sentence
embeddings of instructions lie; `uniform` (the default) is random on the sphere, where no neighbour is much
nearer than any other: the worst case of an approximate search.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(n: int, dim: int, k: int, search_batch_size: int, budget_s: float, index: str = "exact",
            data: str = "uniform") -> dict:
    import faiss
    import numpy as np

    from synth.taggers.neighbors import nearest_neighbors

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    if data == "clustered":  # around 10K topic centres; spread 0.35 per dimension against unit-variance centres
        centres = rng.standard_normal((10_000, dim), dtype=np.float32)
        emb *= 0.35
        emb += centres[rng.integers(0, len(centres), n)]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    generate_s = time.perf_counter() - t
    ids = list(range(n))
    order = rng.permutation(n)

    from synth.taggers.neighbors import build_index, recall_at

    # The index is built once and its recall measured apart; the runs below time the searches and the tags.
    t = time.perf_counter()
    built = build_index(emb, index)
    build_s = time.perf_counter() - t
    info = dict(built[1])
    recall_s = 0.0
    if "nlist" in info:
        t = time.perf_counter()
        info["recall_at_10"] = round(recall_at(emb, built[0]), 4)
        recall_s = time.perf_counter() - t
    built = (built[0], info)

    def run(rows):
        t = time.perf_counter()
        tags = nearest_neighbors(emb, ids, k=k, search_batch_size=search_batch_size, rows=rows, built=built)
        return time.perf_counter() - t, tags

    calib_s, _ = run(order[:search_batch_size])
    per_query = calib_s / min(search_batch_size, n)
    if per_query * n <= budget_s:
        rows, sampled = None, None
    else:  # whole batches, so the sample runs at the same batch efficiency as the full run
        sampled = max(1, int(budget_s / per_query) // search_batch_size) * search_batch_size
        rows = np.sort(order[:sampled])
    search_s, tags = run(rows)
    queries = len(tags)
    seconds = search_s * n / queries + build_s + recall_s
    dist = np.array([t["min_neighbor_distance"] for t in tags])
    return {
        "n": n, "dim": dim, "k": min(k, n), "search_batch_size": search_batch_size,
        "faiss_threads": faiss.omp_get_max_threads(),
        "queries_searched": queries, "search_s": round(search_s, 2),
        "seconds": round(seconds, 2), "minutes": round(seconds / 60, 2),
        "extrapolated_from_queries": sampled,
        "tags_per_minute": round(60 * n / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # KiB on Linux
        "embeddings_mb": round(emb.nbytes / 2**20),
        "generate_s": round(generate_s, 1),
        "mean_min_neighbor_distance": round(float(dist.mean()), 4),  # ~2 for random vectors: a sanity check
        "data": data, "index_used": info.get("index"), "recall_at_10": info.get("recall_at_10"),
        "index_build_s": round(build_s, 1), "recall_check_s": round(recall_s, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--k", type=int, default=500)  # reference gen_dis.py
    ap.add_argument("--dim", type=int, default=384)  # all-MiniLM-L6-v2; all-mpnet-base-v2 is 768
    ap.add_argument("--search_batch_size", type=int, default=1024)  # reference gen_dis.py
    ap.add_argument("--budget_s", type=float, default=200, help="search seconds per size before sampling queries")
    ap.add_argument("--index", default="exact", choices=["auto", "exact", "ivf"])
    ap.add_argument("--data", default="uniform", choices=["uniform", "clustered"])
    ap.add_argument("--_one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, in this process
    args = ap.parse_args()

    if args._one:
        print(json.dumps(measure(args._one, args.dim, args.k, args.search_batch_size, args.budget_s, args.index,
                                 args.data)))
        return

    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--_one", str(n), "--k", str(args.k), "--dim", str(args.dim),
               "--search_batch_size", str(args.search_batch_size), "--budget_s", str(args.budget_s),
               "--index", args.index, "--data", args.data]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"n={n}: {results[-1]['seconds']} s, peak {results[-1]['peak_rss_mb']} MB", file=sys.stderr)

    print(json.dumps({
        "benchmark": f"min_neighbor_distance (FAISS kNN, index {args.index}, {args.data} vectors, CPU)",
        "note": "random unit vectors, embedding time excluded; seconds = search_s scaled to n when "
                "extrapolated_from_queries is set; peak_rss_mb of a sampled run leaves out the n result "
                "dicts (~0.3 KB each)",
        "results": results,
        "judge_tags_per_minute": None,
        "judge_taggers": "see benchmarks/taggers.py",
    }, indent=2))


if __name__ == "__main__":
    main()
