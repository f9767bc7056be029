"""Training throughput of the tiny SFT (LoRA on SmolLM2-135M-Instruct, CPU, dtype auto), with and
without packing. Prints JSON.

    python benchmarks/sft_throughput.py [--dataset runs/magpie_air/export] [--steps 4]

tokens/s: TRL's `num_tokens` (the attention mask's sum, so real tokens without padding; with
padding-free packing, the packed length) over `train_runtime`. Both modes count real tokens, so the
ratio is what packing buys.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(dataset: str, steps: int, packing: bool, batch: int, max_length: int, dtype: str = "auto") -> dict:
    from train.sft import parse, train

    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", "recipes/configs/sft/tiny.yaml", "--dataset", dataset, "--output_dir", out,
                "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
                "--gradient_accumulation_steps", "1", "--max_length", str(max_length), "--packing", str(packing),
                "--report_to", "none", "--save_strategy", "no", "--merge_adapter", "false", "--logging_steps", "1",
                "--dtype", dtype]
        summary = train(*parse(argv))
    return {"packing": packing, "steps": summary["steps"], "train_runtime_s": summary["train_runtime"],
            "tokens": summary["tokens"], "tokens_per_s": round(summary["tokens"] / summary["train_runtime"], 1),
            "loss_first": summary["first_loss"], "loss_last": summary["last_loss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="runs/magpie_air/export")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=1024)
    ap.add_argument("--dtype", default="auto", help="auto (bf16 only where the CPU computes it), bfloat16, float32")
    args = ap.parse_args()
    import torch

    from core.engines import cpu_computes_bf16

    results = [run(args.dataset, args.steps, p, args.batch, args.max_length, args.dtype) for p in (True, False)]
    print(json.dumps({"model": "embedded:smollm2-135m-instruct (LoRA r=16)", "device": "cpu",
                      "threads": torch.get_num_threads(), "dtype": args.dtype,
                      "cpu_native_bf16": cpu_computes_bf16(), "dataset": args.dataset, "batch": args.batch,
                      "max_length": args.max_length, "runs": results,
                      "packing_speedup": round(results[0]["tokens_per_s"] / results[1]["tokens_per_s"], 2)}, indent=2))


if __name__ == "__main__":
    main()
