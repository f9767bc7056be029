"""Throughput of the tiny preference stage and of tiny DPO (SmolLM2-135M-Instruct on this CPU). Prints JSON.

    python benchmarks/dpo_throughput.py [--run runs/magpie_air] [--prompts 16] [--steps 8]

Preference samples per minute: k=5 responses per instruction at T=0.8 (the tiny config's 128-token limit), from
the samples manifest's own timing (model load excluded); scored responses per minute likewise for the reward pass
(the log-prob stand-in). DPO tokens/s: TRL's `num_tokens` (real tokens of chosen and rejected, prompt included)
over `train_runtime`, LoRA as recipes/configs/dpo/tiny.yaml. Needs a tagged set: runs/<recipe>/tagged from
`bash recipes/magpie_air.sh` (tiny on a CPU); DPO starts from runs/<recipe>/sft when it is there, else from
SmolLM2-135M-Instruct itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def preferences(run: Path, root: Path, prompts: int) -> dict:
    from core import store

    shutil.copytree(run / "tagged", root / "tagged")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "synth", "preferences", "--config", "recipes/configs/synth/tiny.yaml",
                    "--output_dir", str(root), "--pref_size", str(prompts), "--report_to", "none"], cwd=ROOT,
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    samples = store.DatasetDir(root / "preferences/samples").manifest()
    scored = store.DatasetDir(root / "preferences/scored").manifest()
    n, secs = samples["counts"]["samples"], samples["seconds_this_run"]
    score_secs = scored["finished"] - scored["created"]
    return {"instructions": samples["counts"]["instructions"], "k": samples["sampling"]["n"], "samples": n,
            "sampling_s": secs, "samples_per_min": round(n / secs * 60, 1),
            "generated_tok_per_s": round(samples["counts"]["tokens"] / secs, 1),
            "scoring_s": round(score_secs, 1), "scored_per_min": round(scored["counts"]["scored"] / score_secs * 60, 1),
            "pairs": scored["counts"]["ok"], "ties": scored["counts"]["tie"], "unscored": scored["counts"]["unscored"],
            "stage_wall_s": round(wall, 1)}


def dpo(start: str, export: Path, steps: int, batch: int) -> dict:
    from train.dpo import parse, train

    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", "recipes/configs/dpo/tiny.yaml", "--model_name_or_path", start, "--dataset", str(export),
                "--output_dir", out, "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
                "--report_to", "none", "--save_strategy", "no", "--merge_adapter", "false"]
        s = train(*parse(argv))
    return {"start": start, "steps": s["steps"], "pairs": s["pairs"], "batch": batch,
            "train_runtime_s": s["train_runtime"], "tokens": s["tokens"],
            "tokens_per_s": round(s["tokens"] / s["train_runtime"], 1),
            "loss_first": s["first_loss"], "loss_last": s["last_loss"],
            "reward_margin_first": s["first_margin"], "reward_margin_last": s["last_margin"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/magpie_air", help="a run folder with tagged/ (and sft/)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    import torch

    from core.engines import cpu_computes_bf16

    run = (ROOT / args.run) if not Path(args.run).is_absolute() else Path(args.run)
    if not (run / "tagged").is_dir():
        sys.exit(f"{run}/tagged is missing: run `bash recipes/magpie_air.sh` first (tiny on a CPU)")
    start = str(run / "sft") if (run / "sft").is_dir() else "embedded:smollm2-135m-instruct"
    with tempfile.TemporaryDirectory() as tmp:
        pref = preferences(run, Path(tmp), args.prompts)
        train = dpo(start, Path(tmp) / "preferences/export", args.steps, args.batch)
    print(json.dumps({"model": "embedded:smollm2-135m-instruct", "device": "cpu", "threads": torch.get_num_threads(),
                      "cpu_native_bf16": cpu_computes_bf16(), "preferences": pref, "dpo": train}, indent=2))


if __name__ == "__main__":
    main()
