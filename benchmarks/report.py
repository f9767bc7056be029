"""Time, peak memory and file size of the run report (report/page.py) on synthetic tagged sets. Prints JSON.

    python benchmarks/report.py [--rows 1000 100000 1000000] [--data_dir /tmp/magpie-scale]

Each size is a run folder holding the tagged set of benchmarks/scale_data.py (built once, cached) and a filter
run of `pro-300k-filtered` over it, so the report counts every row, classifies every row against the filter,
samples 5,000 rows for the browser and reads the funnel. The synthetic set has no neighbour-tagger manifest, so
no embedding map is drawn (on a real run it embeds --map_sample instructions per set and runs a t-SNE: see
`map_seconds` below, measured separately on the given number of random texts). Each report is written in a fresh
process so that its peak RSS (VmHWM) is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def prepare(data_dir: Path, rows: int) -> Path:
    """runs-like folder <data_dir>/report-<rows>/ with tagged/ (a link to the cached set) and filtered/."""
    import scale_data

    from synth.filters import filter_dataset

    cached = data_dir / f"tagged-{rows}"
    scale_data.build(cached, rows)
    run = data_dir / f"report-{rows}"
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "tagged").exists():
        (run / "tagged").symlink_to(cached.resolve())
    filter_dataset(run / "tagged", run / "filtered", "pro-300k-filtered", size=max(rows * 3 // 10, 1))
    return run


def report(run: Path) -> dict:
    code = ("import json, resource, sys; from report import write_report; s = write_report(sys.argv[1]); "
            "print(json.dumps({**s, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    s = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rows": s["rows"], "browser_rows": s["samples"], "seconds_in_process": s["seconds"],
            "seconds_with_start": round(time.perf_counter() - t0, 1), "html_mb": round(s["bytes"] / 2**20, 2),
            "data_json_mb": round((run / "report" / "data.json").stat().st_size / 2**20, 2),
            "peak_rss_mb": s["peak_rss_mb"]}


def map_seconds(n: int) -> float:
    """The embedding map's cost on n instructions: MiniLM embeddings and a t-SNE, as the report runs them."""
    import random

    from sklearn.manifold import TSNE

    from synth.taggers.neighbors import NeighborTagger

    rng = random.Random(0)
    words = "data model plan write explain code list story travel health money learn python music history".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 30))) for _ in range(n)]
    t0 = time.perf_counter()
    vecs = NeighborTagger(embedding_model="embedded:all-minilm-l6-v2").embed(texts)
    TSNE(n_components=2, perplexity=30.0, init="pca", random_state=0, max_iter=500).fit_transform(vecs)
    return round(time.perf_counter() - t0, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    ap.add_argument("--data_dir", default="/tmp/magpie-scale")
    ap.add_argument("--map_sample", type=int, default=2000)
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    results = [{"rows_requested": n, **report(prepare(data_dir, n))} for n in args.rows]
    print(json.dumps({"reports": results, "map_seconds": {"instructions": args.map_sample,
                                                          "seconds": map_seconds(args.map_sample)}}, indent=2))


if __name__ == "__main__":
    main()
