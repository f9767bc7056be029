"""Synthesis on Ray against one process, the same work (prints JSON).

    python benchmarks/ray_scaling.py [--total_prompts 64] [--n 8] [--max_tokens 64] [--response_max_tokens 96]

The work: `python -m synth run` of the tiny profile (hf engine, SmolLM2-135M-Instruct) with stages instructions and
responses, `total_prompts` instructions in rounds of `n` (a round a shard), their answers `n` per shard. Runs:

  single     one process, torch's default threads (this machine's cores): what a run without Ray does
  ray_1      a local Ray cluster, 1 engine actor with 1 torch thread
  ray_2      the same cluster, 2 actors, 1 thread each (this machine's 2 cores)

Each run's seconds count everything a user waits for except starting the cluster (`cluster_start_s`, once): the
actors' start and model load (per stage) included. `overhead_s` is what Ray adds before the first shard: a 1-prompt
run on 1 actor (start, engine build, Ray Data's plan, per stage); `pays_from_pairs` the work size from which ray_2
beats single: overhead / (1/rate_single - 1/marginal rate of ray_2), its marginal rate being its pairs over its
seconds less the overhead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def run(argv: list[str], out: Path) -> dict:
    import contextlib
    import io

    from core import store
    from synth.__main__ import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", *argv, "--output_dir", str(out)]) == 0
    seconds = time.perf_counter() - t0
    pairs = store.DatasetDir(out / "responses").manifest()["counts"]["pairs"]
    return {"pairs": pairs, "seconds": round(seconds, 1), "pairs_per_min": round(pairs / seconds * 60, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total_prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--response_max_tokens", type=int, default=96)
    a = ap.parse_args()
    import ray
    import torch

    base = ["--config", str(ROOT / "recipes/configs/synth/tiny.yaml"), "--stages", "instructions", "responses",
            "--n", str(a.n), "--hf_batch_size", str(a.n), "--response_batch_size", str(a.n),
            "--max_tokens", str(a.max_tokens), "--response_max_tokens", str(a.response_max_tokens),
            "--report_to", "none"]
    work = [*base, "--total_prompts", str(a.total_prompts)]
    out: dict = {"work": {"total_prompts": a.total_prompts, "n": a.n, "max_tokens": a.max_tokens,
                          "response_max_tokens": a.response_max_tokens}, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out["single"] = {**run(work, tmp / "single"), "torch_threads": torch.get_num_threads()}
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(tmp / "ray"))
        out["cluster_start_s"] = round(time.perf_counter() - t0, 1)
        try:
            one = [*base, "--total_prompts", "1", "--n", "1", "--ray_address", "auto", "--ray_actors", "1"]
            out["overhead_s"] = run(one, tmp / "one")["seconds"]
            for actors in (1, 2):
                out[f"ray_{actors}"] = run([*work, "--ray_address", "auto", "--ray_actors", str(actors)],
                                           tmp / f"ray{actors}")
        finally:
            ray.shutdown()
    rate = {k: out[k]["pairs"] / out[k]["seconds"] for k in ("single", "ray_1", "ray_2")}
    out["speedup_ray_2_over_single"] = round(rate["ray_2"] / rate["single"], 2)
    out["speedup_ray_2_over_ray_1"] = round(rate["ray_2"] / rate["ray_1"], 2)
    # Ray's time is overhead + pairs / its marginal rate; single's is pairs / its rate.
    marginal = out["ray_2"]["pairs"] / max(out["ray_2"]["seconds"] - out["overhead_s"], 1e-9)
    gain = 1 / rate["single"] - 1 / marginal
    out["ray_2_marginal_pairs_per_min"] = round(marginal * 60, 1)
    out["pays_from_pairs"] = round(out["overhead_s"] / gain) if gain > 0 else None
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
