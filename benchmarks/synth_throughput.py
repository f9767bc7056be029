"""Throughput of the tiny synthesis profile against a ceiling measured in the same run.

    python benchmarks/synth_throughput.py [--total_prompts 64] [--n 16] ...   (prints JSON)

pipeline: `generate_instructions` + `generate_responses` on the embedded SmolLM2 (hf engine,
CPU, the config's dtype), wall time of the stages (model load excluded), useful generated tokens (up to and
including each sequence's stop token).
ceiling ("replay"): the same model's bare batched `generate`, replaying every generate call the
pipeline made with the same batch shapes, the same sampling and the same number of steps (so the
same lengths), without stop strings, sanitizing, templates or Parquet. ratio = ceiling time /
pipeline time for the same useful tokens.
dense: a bare `generate` whose rows all run the mean sequence length (min_new_tokens): what the
hardware gives when no row idles; `utilization` = useful tokens / rows x steps of the pipeline's
batches tells how much static batching leaves on the table.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="recipes/configs/synth/tiny.yaml")
    ap.add_argument("--total_prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--hf_batch_size", type=int, default=16)
    ap.add_argument("--response_batch_size", type=int, default=16)
    args = ap.parse_args()

    import torch

    from synth import config as cfg
    from synth.engines import get_engine
    from synth.instructions import generate_instructions
    from synth.responses import generate_responses

    margs, iargs, rargs, *_, run = cfg.parse([
        "--config", args.config, "--total_prompts", str(args.total_prompts), "--n", str(args.n),
        "--hf_batch_size", str(args.hf_batch_size), "--response_batch_size", str(args.response_batch_size),
        "--report_to", "none"])
    engine = get_engine(margs.engine, **margs.engine_kwargs())
    model = engine.model

    calls = []  # every generate call of the pipeline: what the ceiling replays
    real_generate = model.generate

    def recording_generate(**kw):
        out = real_generate(**kw)
        calls.append({"input_ids": kw["input_ids"], "attention_mask": kw["attention_mask"],
                      "steps": out.shape[1] - kw["input_ids"].shape[1], "do_sample": kw.get("do_sample", False),
                      "temperature": kw.get("temperature"), "top_p": kw.get("top_p")})
        return out

    model.generate = recording_generate
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ins = generate_instructions(engine, margs, iargs, run, Path(tmp) / "instructions")
        t1 = time.perf_counter()
        res = generate_responses(engine, margs, rargs, Path(tmp) / "instructions", Path(tmp) / "responses")
        t2 = time.perf_counter()
    model.generate = real_generate
    n_ins_calls = sum(1 for c in calls if c["do_sample"])

    def bare(call, steps):
        kw = dict(max_new_tokens=steps, min_new_tokens=steps, pad_token_id=engine.tokenizer.pad_token_id)
        if call["do_sample"]:
            kw.update(do_sample=True, temperature=call["temperature"], top_p=call["top_p"], top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        t = time.perf_counter()
        with torch.inference_mode():
            real_generate(input_ids=call["input_ids"], attention_mask=call["attention_mask"], **kw)
        return time.perf_counter() - t

    replay = [bare(c, c["steps"]) for c in calls]
    stages = {}
    for name, cs, rs, tokens, seconds, items in (
        ("instructions", calls[:n_ins_calls], replay[:n_ins_calls], ins["tokens_this_run"], t1 - t0, ins["kept"]),
        ("responses", calls[n_ins_calls:], replay[n_ins_calls:], res["tokens_this_run"], t2 - t1, res["pairs"]),
    ):
        row_steps = sum(c["steps"] * c["input_ids"].shape[0] for c in cs)
        rows = sum(c["input_ids"].shape[0] for c in cs)
        mean_len = max(1, round(tokens / rows))
        dense_s = bare(cs[0], mean_len) if cs else float("nan")
        dense_tok_s = cs[0]["input_ids"].shape[0] * mean_len / dense_s
        stages[name] = {
            "items": items, "generated_tokens": tokens, "seconds": round(seconds, 2),
            "items_per_min": round(items / seconds * 60, 1), "tok_per_s": round(tokens / seconds, 1),
            "ceiling_tok_per_s": round(tokens / sum(rs), 1), "ratio": round(sum(rs) / seconds, 3),
            "utilization": round(tokens / row_steps, 3), "dense_tok_per_s": round(dense_tok_s, 1),
            "generate_calls": len(cs), "mean_tokens_per_sequence": mean_len,
        }
    total_s, total_tok = t2 - t0, ins["tokens_this_run"] + res["tokens_this_run"]
    print(json.dumps({
        "profile": run.profile, "model": margs.model, "dtype": str(model.dtype), "threads": torch.get_num_threads(),
        "config": {"total_prompts": iargs.total_prompts, "n": iargs.n, "hf_batch_size": margs.hf_batch_size,
                   "max_tokens": iargs.max_tokens, "response_max_tokens": rargs.response_max_tokens},
        "pairs": res["pairs"], "seconds": round(total_s, 2),
        "pairs_per_min": round(res["pairs"] / total_s * 60, 1),
        "generated_tok_per_s": round(total_tok / total_s, 1),
        "ceiling_tok_per_s": round(total_tok / sum(replay), 1),
        "ratio_to_ceiling": round(sum(replay) / total_s, 3),
        # the stricter reading: every row busy every step (see the module docstring)
        "ratio_to_dense": round(sum(st["generated_tokens"] / st["dense_tok_per_s"] for st in stages.values()) / total_s, 3),
        "stages": stages,
    }, indent=2))


if __name__ == "__main__":
    main()
