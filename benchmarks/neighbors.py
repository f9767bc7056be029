"""Cost of the min_neighbor_distance tags (exact FAISS kNN) at dataset scale on this machine.

    python benchmarks/neighbors.py [--sizes 100000 1000000] [--k 500] [--budget_s 200]   (prints JSON)

Random unit vectors stand in for instruction embeddings (384-d: the tiny profile's MiniLM), so
embedding time is not included: only `nearest_neighbors` (index build + batched exact search +
the tags). Exact search is all-pairs: N^2 * d * 2 flops, 7.7e12 at 100k but 7.7e14 at 1M, which
is hours on 2 CPU cores. So each size first times one search batch; when the whole run would take
longer than --budget_s, it searches a random sample of queries against the full index (same cost
per query) and scales the time to N, saying so in `extrapolated_from_queries`.

Each size runs in a fresh process so that `peak_rss_mb` (ru_maxrss) is that size's own peak.
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


def measure(n: int, dim: int, k: int, search_batch_size: int, budget_s: float) -> dict:
    import faiss
    import numpy as np

    from synth.taggers.neighbors import nearest_neighbors

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    generate_s = time.perf_counter() - t
    ids = list(range(n))
    order = rng.permutation(n)

    def run(rows):
        t = time.perf_counter()
        tags = nearest_neighbors(emb, ids, k=k, search_batch_size=search_batch_size, rows=rows)
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
    seconds = search_s * n / queries
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
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--k", type=int, default=500)  # reference gen_dis.py
    ap.add_argument("--dim", type=int, default=384)  # all-MiniLM-L6-v2; all-mpnet-base-v2 is 768
    ap.add_argument("--search_batch_size", type=int, default=1024)  # reference gen_dis.py
    ap.add_argument("--budget_s", type=float, default=200, help="search seconds per size before sampling queries")
    ap.add_argument("--_one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, in this process
    args = ap.parse_args()

    if args._one:
        print(json.dumps(measure(args._one, args.dim, args.k, args.search_batch_size, args.budget_s)))
        return

    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--_one", str(n), "--k", str(args.k), "--dim", str(args.dim),
               "--search_batch_size", str(args.search_batch_size), "--budget_s", str(args.budget_s)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"n={n}: {results[-1]['seconds']} s, peak {results[-1]['peak_rss_mb']} MB", file=sys.stderr)

    print(json.dumps({
        "benchmark": "min_neighbor_distance (exact FAISS IndexFlatL2 kNN, CPU)",
        "note": "random unit vectors, embedding time excluded; seconds = search_s scaled to n when "
                "extrapolated_from_queries is set; peak_rss_mb of a sampled run leaves out the n result "
                "dicts (~0.3 KB each)",
        "results": results,
        "judge_tags_per_minute": None,
        "judge_taggers": "see benchmarks/taggers.py",
    }, indent=2))


if __name__ == "__main__":
    main()
