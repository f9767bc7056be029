"""Alignment benchmarks (AlpacaEval 2, Arena-Hard), lm-eval harness jobs and the paper table."""
import warnings

# alpaca_eval imports pkg_resources (hence setuptools<81 in pyproject.toml); its deprecation notice
# says nothing a user of this repo can act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
