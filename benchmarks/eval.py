"""Evaluation speed: answers and judgments per minute in the tiny profile, and scoring at paper scale.

    python benchmarks/eval.py [--prompts 16] [--max_tokens 160] [--skip-models]

Models: SmolLM2-135M-Instruct (hf engine, dtype auto: bf16 on a CPU with native bf16, else fp32)
answers the repo's tiny AlpacaEval-style prompts twice (greedy with repetition penalty 1.2, and
plain greedy, so that the judge has two different answers to compare), then judges them as
AlpacaEval 2 (one token, top-5 log-probabilities) and as Arena-Hard (both orders, verdict
prefilled). Times exclude model loading.
Scoring: alpaca_eval's LC GLM (length_controlled_v1) on 805 synthetic annotations plus 2 x 805 gamed
rows, and Arena-Hard's Bradley-Terry fit with 100 bootstrap rounds on 500 questions x 2 games, for 1
and for 10 models; synthetic data shaped like the real thing, seeded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

TINY = "embedded:smollm2-135m-instruct"


def bench_models(n_prompts: int, max_tokens: int) -> dict:
    from core.engines import Sampling, get_engine
    from eval import benchmarks
    from eval.benchmarks import get_benchmark
    from eval.judges import PairwiseJudge

    prompts = benchmarks.load("alpaca_eval", "tiny")[0][:n_prompts]
    engine = get_engine("hf", model=TINY, batch_size=16)
    convs = [[{"role": "user", "content": p["instruction"]}] for p in prompts]
    t0 = time.perf_counter()
    a = engine.chat(convs, Sampling(temperature=0, max_tokens=max_tokens, repetition_penalty=1.2))
    t_answers = time.perf_counter() - t0
    b = engine.chat(convs, Sampling(temperature=0, max_tokens=max_tokens))
    items = [{"question": p["instruction"], "answer_a": x[0].text, "answer_b": y[0].text}
             for p, x, y in zip(prompts, a, b)]
    out = {"answers": len(prompts), "answers_per_min": round(len(prompts) / t_answers * 60, 1),
           "answer_tokens_per_s": round(sum(x[0].num_tokens for x in a) / t_answers, 1)}
    for bench, prefill, n in (("alpaca_eval", "none", items), ("arena_hard", "label", items + items)):
        judge = PairwiseJudge(engine, get_benchmark(bench), max_tokens=8, prefill=prefill)
        t0 = time.perf_counter()
        verdicts = judge.judge(n)
        dt = time.perf_counter() - t0
        out[bench] = {"judgments": len(n), "judgments_per_min": round(len(n) / dt * 60, 1),
                      "unparsed": sum(v["verdict"] is None for v in verdicts)}
    engine.close()
    return out


def _logistic(x):
    return 1 / (1 + np.exp(-x))


def bench_scoring() -> dict:
    from eval.alpaca import length_controlled_winrate
    from eval.arena import arena_hard_score

    rng = np.random.default_rng(0)
    n = 805
    difficulty = rng.normal(0, 0.8, n)
    len_1 = rng.integers(200, 2500, n)
    len_2 = (len_1 * 1.3 * rng.lognormal(0, 0.4, n)).astype(int) + 1
    delta = len_1 - len_2
    pref = 1 + _logistic(0.3 - 1.2 * np.tanh(delta / delta.std()) - difficulty + rng.normal(0, 0.7, n))
    ann = pd.DataFrame({"instruction": [f"i{i}" for i in range(n)], "output_1": ["b" * k for k in len_1],
                        "output_2": ["m" * k for k in len_2], "generator_1": "gpt4_turbo", "generator_2": "model",
                        "preference": pref, "index": np.arange(n)})
    gamed = pd.concat([pd.DataFrame({"index": np.arange(n), "std_delta_len": s, "instruction_difficulty": difficulty,
                                     "preference": _logistic(-1.2 * np.tanh(s) - difficulty), "not_gamed_baseline": False})
                       for s in (rng.normal(-1, 0.8, n), rng.normal(1, 0.8, n))], ignore_index=True)
    out = {}
    for name, g in (("lc_v1_805", gamed), ("lc_minimal_805", None)):
        t0 = time.perf_counter()
        r = length_controlled_winrate(ann, gamed=g)
        out[name] = {"seconds": round(time.perf_counter() - t0, 2), "lc": round(r["length_controlled_winrate"], 2),
                     "wr": round(r["win_rate"], 2)}
    labels = np.array(["A>>B", "A>B", "A=B", "B>A", "B>>A"])
    for models in (1, 10):
        rows = [{"question_id": q, "model": f"m{m}", "baseline": "gpt-4-0314", "game": g,
                 "verdict": labels[rng.integers(0, 5)]} for m in range(models) for q in range(500) for g in (1, 2)]
        t0 = time.perf_counter()
        arena_hard_score(rows, num_rounds=100, seed=0)
        out[f"arena_bootstrap_100_rounds_{models}_models"] = {"judgments": len(rows),
                                                              "seconds": round(time.perf_counter() - t0, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max_tokens", type=int, default=160)
    ap.add_argument("--skip-models", action="store_true")
    a = ap.parse_args()
    import torch

    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
              "scoring": bench_scoring()}
    if not a.skip_models:
        result["tiny_models"] = bench_models(a.prompts, a.max_tokens)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
