"""Synthesis throughput of the two local engines on the same work, in one run (prints JSON).

    python benchmarks/synth_throughput.py [--total_prompts 64] [--n 16] [--max_tokens 128] [--response_max_tokens 128]

The work: `generate_instructions` + `generate_responses` of the tiny profile (SmolLM2-135M-Instruct, the config's
dtype), `total_prompts` instructions in rounds of `n`, then their answers. Each engine is built once (its build time
is reported apart and excluded); the stages' wall time counts everything else (templates, Parquet).

  hf              transformers `generate`, its own static batches (hf_batch_size rows, one Sampling per batch)
  vllm_per_shard  vLLM, the stages' default: all rounds of a shard in one call, all answers of a shard in one call
  vllm_per_round  vLLM, one call per round and one per n answers (rounds_per_shard 1, response_batch_size n):
                  the layout before whole-shard calls

Reported per run: pairs/min, generated tok/s, engine calls. `vllm_to_hf` is the ratio of pairs/min;
`shard_to_round` the speed-up of whole-shard calls. Idle shares: for hf, the share of the generate slots
(rows x steps of every batch) that held no useful token (finished rows wait for the batch's longest); for
vLLM per round, the share of the per-round time that whole-shard calls save (the engine waiting on the
longest sequence of each small call).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_stages(engine, argv: list[str]) -> dict:
    from core.answer import generate_responses
    from synth import config as cfg
    from synth.instructions import generate_instructions

    margs, iargs, rargs, *_, run = cfg.parse(argv)
    calls = engine.stats["calls"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ins = generate_instructions(engine, margs, iargs, run, Path(tmp) / "instructions")
        res = generate_responses(engine, margs, rargs, Path(tmp) / "instructions", Path(tmp) / "responses")
        seconds = time.perf_counter() - t0
    tokens = ins["tokens_this_run"] + res["tokens_this_run"]
    return {"pairs": res["pairs"], "seconds": round(seconds, 2), "pairs_per_min": round(res["pairs"] / seconds * 60, 1),
            "generated_tokens": tokens, "generated_tok_per_s": round(tokens / seconds, 1),
            "engine_calls": engine.stats["calls"] - calls}


def hf_idle_share(engine, argv: list[str]) -> float:
    """Share of the hf engine's generate slots (rows x steps) that held no useful token, on the same work."""
    model = engine.model
    real, slots = model.generate, []

    def counting(**kw):
        out = real(**kw)
        slots.append(kw["input_ids"].shape[0] * (out.shape[1] - kw["input_ids"].shape[1]))
        return out

    model.generate = counting
    try:
        r = run_stages(engine, argv)
    finally:
        model.generate = real
    return round(1 - r["generated_tokens"] / max(sum(slots), 1), 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="recipes/configs/synth/tiny.yaml")
    ap.add_argument("--total_prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max_tokens", type=int, default=128)
    ap.add_argument("--response_max_tokens", type=int, default=128)
    ap.add_argument("--hf_batch_size", type=int, default=16)
    ap.add_argument("--skip_hf", action="store_true")
    args = ap.parse_args()

    import torch

    from core.engines import get_engine

    rounds = -(-args.total_prompts // args.n)
    base = ["--config", args.config, "--total_prompts", str(args.total_prompts), "--n", str(args.n),
            "--max_tokens", str(args.max_tokens), "--response_max_tokens", str(args.response_max_tokens),
            "--hf_batch_size", str(args.hf_batch_size), "--report_to", "none"]
    per_shard = ["--rounds_per_shard", str(rounds), "--response_batch_size", str(args.total_prompts)]
    per_round = ["--rounds_per_shard", "1", "--response_batch_size", str(args.n)]
    out = {"model": "embedded:smollm2-135m-instruct", "threads": torch.get_num_threads(),
           "work": {"total_prompts": args.total_prompts, "n": args.n, "max_tokens": args.max_tokens,
                    "response_max_tokens": args.response_max_tokens}, "build_seconds": {}}

    from synth.config import parse

    margs = parse([*base, "--engine", "vllm"])[0]
    t = time.perf_counter()
    vllm = get_engine("vllm", **margs.engine_kwargs())
    out["build_seconds"]["vllm"] = round(time.perf_counter() - t, 1)
    out["dtype"] = vllm.info.extras["dtype"]
    run_stages(vllm, [*base, "--engine", "vllm", "--total_prompts", str(args.n), *per_shard])  # warm-up
    out["vllm_per_shard"] = run_stages(vllm, [*base, "--engine", "vllm", *per_shard])
    out["vllm_per_round"] = run_stages(vllm, [*base, "--engine", "vllm", *per_round])
    vllm.close()
    if not args.skip_hf:
        margs = parse([*base, "--engine", "hf"])[0]
        t = time.perf_counter()
        hf = get_engine("hf", **margs.engine_kwargs())
        out["build_seconds"]["hf"] = round(time.perf_counter() - t, 1)
        out["hf"] = run_stages(hf, [*base, "--engine", "hf", *per_shard])
        out["hf_idle_share"] = hf_idle_share(hf, [*base, "--engine", "hf", *per_shard])
        out["vllm_to_hf"] = round(out["vllm_per_shard"]["pairs_per_min"] / out["hf"]["pairs_per_min"], 2)
        out["vllm_to_hf_tok_per_s"] = round(out["vllm_per_shard"]["generated_tok_per_s"]
                                            / out["hf"]["generated_tok_per_s"], 2)
    s, r = out["vllm_per_shard"], out["vllm_per_round"]
    out["shard_to_round"] = round(s["pairs_per_min"] / r["pairs_per_min"], 2)
    out["vllm_per_round_idle_share"] = round(1 - s["seconds"] / r["seconds"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
