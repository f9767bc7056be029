"""Alignment benchmarks (AlpacaEval 2, Arena-Hard), lm-eval harness jobs and the paper table."""
