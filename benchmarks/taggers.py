"""Tagging throughput of the tiny profile: records tagged per minute, per tagger.

    python benchmarks/taggers.py [--records 32] [--max_tokens 256] [--batch_size 16] [--prefill json|label]

Records are made from 8 fixed instructions x 4 fixed phrasings (not Magpie output, so the run needs
no synthesis first); each has a short hand-written response. Every model tagger runs on the embedded
SmolLM2-135M-Instruct (hf engine, dtype auto: bf16 on a CPU with native bf16, else fp32), one engine
shared by all of them, as in the tiny profile. Times exclude model loading; the language detector's
one-off build is timed apart.
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

TINY = "embedded:smollm2-135m-instruct"
QUESTIONS = [
    ("what the capital of France is", "The capital of France is Paris."),
    ("how to reverse a list in Python", "Use `my_list[::-1]` for a reversed copy, or `my_list.reverse()` in place."),
    ("what 17 times 23 is", "17 x 23 = 391."),
    ("a name for a bakery that sells only bread", "How about \"The Daily Crumb\"?"),
    ("why the sky is blue", "Air scatters short (blue) wavelengths of sunlight more than long ones."),
    ("how to plan a three-day trip to Rome", "Day 1: the Colosseum and Forum. Day 2: the Vatican. Day 3: Trastevere."),
    ("how to fix the grammar in 'he go to school yesterday'", "He went to school yesterday."),
    ("a haiku about rain", "Soft rain on the roof,\nthe gutters hum their one song,\nthe street shines like glass."),
]
PHRASINGS = ["Tell me {q}.", "Can you explain {q}?", "I need to know {q}, please.", "Quick question: {q}?"]


def make_records(n: int) -> list[dict]:
    pairs = [(p.format(q=q), a) for p in PHRASINGS for q, a in QUESTIONS]
    return [{"id": i, "instruction": pairs[i % len(pairs)][0], "response": pairs[i % len(pairs)][1]}
            for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=32)
    ap.add_argument("--max_tokens", type=int, default=256, help="judge budget (paper 1024; CPU time)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--prefill", default="json", choices=["json", "label"],
                    help="judge reply prefill: json (paper) or label (the tiny profile's setting)")
    args = ap.parse_args()

    import torch

    from core.engines import shared_engine
    from synth.taggers import get_tagger

    records = make_records(args.records)
    t0 = time.perf_counter()
    engine = shared_engine("hf", TINY, batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    judge = dict(judge_model=TINY, judge_engine="hf", batch_size=args.batch_size, max_tokens=args.max_tokens,
                 prefill=args.prefill)
    taggers = {
        "task_category": get_tagger("task_category", **judge),
        "difficulty": get_tagger("difficulty", **judge),
        "input_quality": get_tagger("input_quality", **judge),
        "instruct_reward": get_tagger("instruct_reward", reward_model=TINY, batch_size=args.batch_size),
        "llama_guard_2": get_tagger("llama_guard_2", guard_model=TINY, guard_engine="hf", batch_size=args.batch_size),
    }
    t0 = time.perf_counter()
    taggers["language"] = get_tagger("language")  # lingua's models load with the tagger
    lingua_build_s = time.perf_counter() - t0

    results = {}
    for name, tagger in taggers.items():
        tokens0 = engine.stats["generated_tokens"]
        t0 = time.perf_counter()
        out = []
        for start in range(0, len(records), args.batch_size):
            out += tagger.tag(records[start:start + args.batch_size])
        seconds = time.perf_counter() - t0
        results[name] = {
            "seconds": round(seconds, 2),
            "tags_per_minute": round(60 * len(records) / seconds, 1),
            "generated_tokens": engine.stats["generated_tokens"] - tokens0,
            "tagged": sum(o[name] is not None for o in out),  # each tagger has a field of its name
            "stats": tagger.stats,
        }
    print(json.dumps({
        "what": f"{len(records)} records from 8 fixed instructions x 4 phrasings with short fixed responses; "
                "tiny profile, every model tagger on one shared SmolLM2-135M-Instruct hf engine",
        "device": f"cpu x{torch.get_num_threads()} threads ({platform.processor() or platform.machine()})",
        "dtype": str(engine.model.dtype), "batch_size": args.batch_size, "judge_max_tokens": args.max_tokens, "judge_prefill": args.prefill,
        "model_load_s": round(load_s, 2), "lingua_first_use_s": round(lingua_build_s, 2),
        "taggers": results,
    }, indent=2))


if __name__ == "__main__":
    main()
