"""What `engine: auto` weighs: each engine's build time, prompt (prefill) and generation (decode) rates (prints JSON).

    python benchmarks/engine_rates.py [--engines hf vllm] [--prompts 64] [--prompt_tokens 400] [--new_tokens 256]

Each engine runs in a fresh process on the embedded SmolLM2-135M-Instruct with the tiny profile's settings (dtype
auto, hf batch 32) through the project's own engine class, and is timed three ways:

  build_s    process start -> engine ready: the imports and the engine build, what a stage process pays once
  prefill    `prompts` prompts of about `prompt_tokens` tokens (a judge's prompt around an instruction), 1 new token
             each: prompt tokens per second
  decode     `prompts` short requests whose answers run from a word to a page (8 asks x 8 topics), greedy up to
             `new_tokens`: generated tokens per second, the prompts' own share taken off at the prefill rate

core/data/engine_speed.yaml holds the numbers `engine: auto` uses (core/engine_choice.py); rerun this on another CPU
and put its output there (or pass --write).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "embedded:smollm2-135m-instruct"
ASKS = ["What is {}? One word.", "Name three facts about {}.", "Explain {} to a child.",
        "Write a short story about {}.", "Give a one-line definition of {}.", "Write an essay about {}.",
        "Is {} important? Yes or no.", "List ten questions about {}."]
TOPICS = ["the moon", "bread", "rivers", "chess", "music", "glass", "bees", "trains"]
FILLER = ("Please read the user's request below and say how hard it is to answer, what the user wants, and what "
          "knowledge an answer needs. ")


def measure(engine_name: str, prompts: int, prompt_tokens: int, new_tokens: int, t_start: float) -> dict:
    from core.engines import Sampling, get_engine

    kwargs = {"batch_size": 32} if engine_name == "hf" else {}
    engine = get_engine(engine_name, model=MODEL, dtype="auto", **kwargs)
    tok = engine.tokenizer
    build_s = time.perf_counter() - t_start
    per = max(1, prompt_tokens // len(tok(FILLER)["input_ids"]))
    long_prompts = [f"Request {i}: " + FILLER * per for i in range(prompts)]
    n_prompt = sum(len(tok(p)["input_ids"]) for p in long_prompts)
    engine.complete(long_prompts[:2], Sampling(temperature=0.0, max_tokens=1))  # warm-up (kernels, caches)
    t0 = time.perf_counter()
    engine.complete(long_prompts, Sampling(temperature=0.0, max_tokens=1))
    prefill_s = time.perf_counter() - t0
    prefill_rate = n_prompt / prefill_s
    # Answers of the lengths a stage meets: a word to a page (a batch that waits on its longest answer wastes
    # the slots of the short ones; that is part of an engine's rate here, as in a responses stage)
    asks = [ask.format(topic) for topic in TOPICS for ask in ASKS]
    short = [tok.apply_chat_template([{"role": "user", "content": asks[i % len(asks)]}], tokenize=False,
                                     add_generation_prompt=True) for i in range(prompts)]
    short_tokens = sum(len(tok(p)["input_ids"]) for p in short)
    t0 = time.perf_counter()
    outs = engine.complete(short, Sampling(temperature=0.0, max_tokens=new_tokens))  # greedy, as the answers
    decode_s = time.perf_counter() - t0
    generated = sum(o[0].num_tokens for o in outs)
    decode_rate = generated / max(decode_s - short_tokens / prefill_rate, 1e-6)
    return {"engine": engine_name, "dtype": engine.info.extras.get("dtype"), "build_s": round(build_s, 1), "prefill_tokens": n_prompt, "prefill_s": round(prefill_s, 2),
            "prefill_tok_s": round(prefill_rate), "generated_tokens": generated, "decode_s": round(decode_s, 2),
            "decode_tok_s": round(decode_rate)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompt_tokens", type=int, default=400)
    ap.add_argument("--new_tokens", type=int, default=256)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure this engine, print its JSON
    ap.add_argument("--t_start", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.prompts, args.prompt_tokens, args.new_tokens, args.t_start)))
        return
    rows = []
    for name in args.engines:
        # A fresh process per engine, timed from before its interpreter starts (perf_counter is system-wide on Linux).
        cmd = [sys.executable, __file__, "--one", name, "--prompts", str(args.prompts), "--prompt_tokens",
               str(args.prompt_tokens), "--new_tokens", str(args.new_tokens), "--t_start", str(time.perf_counter())]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"})
        if out.returncode != 0:
            errors = [line for line in out.stderr.splitlines() if "Error" in line] or out.stderr.splitlines() or ["?"]
            rows.append({"engine": name, "error": errors[-1]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    print(json.dumps({"model": MODEL, "device": f"cpu x{torch.get_num_threads()} threads "
                      f"({platform.processor() or platform.machine()})", "prompts": args.prompts,
                      "engines": rows}, indent=2))


if __name__ == "__main__":
    main()
