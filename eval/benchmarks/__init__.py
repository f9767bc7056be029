"""The benchmarks of `python -m eval run`, one registered object each: a config's `benchmarks:` names them.

    alpaca_eval   AlpacaEval 2 (LC and WR against gpt4_turbo)                 alpaca_eval.py
    arena_hard    Arena-Hard v0.1 / v2.0 (against gpt-4-0314 / per category)  arena_hard.py
    lm_eval       lm-eval harness jobs (Table 3, IFEval; IFBench: magpie_2026) lm_eval.py
    wildbench     WildBench v2 WB-Score (graded alone; beyond the paper)      wildbench.py

What a benchmark supplies, and the registry: base.py. Adding one is a module here, imported below, plus its data
under eval/data/.
"""
from __future__ import annotations

from . import alpaca_eval, arena_hard, lm_eval, wildbench  # noqa: F401  (each registers itself, in this order)
from .base import BENCHMARKS, Benchmark, HeadToHead, JudgedBenchmark, get_benchmark, register_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "HeadToHead", "JudgedBenchmark", "get_benchmark", "load", "register_benchmark"]


def load(benchmark: str, source: str, limit: int | None = None,
         version: str | None = None) -> tuple[list[dict], dict[str, str] | None]:
    """(prompts, hub reference answers by id or None) of a judged benchmark: its `load`."""
    b = get_benchmark(benchmark)
    if not b.judged:
        raise ValueError(f"benchmark {benchmark!r} has no prompt set; choose one of "
                         f"{[n for n, x in BENCHMARKS.items() if x.judged]}")
    return b.load(source, limit, version)
