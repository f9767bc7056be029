"""Alignment benchmarks (AlpacaEval 2, Arena-Hard), lm-eval harness jobs and the paper table."""
from __future__ import annotations

import importlib
import logging
import warnings


def import_alpaca_eval(module: str):
    """An alpaca_eval module, imported without its side effects on this process: its package import
    sets the root logger to INFO (alpaca_eval/annotators/base.py) and imports pkg_resources, whose
    deprecation notice nobody here can act on (pyproject pins setuptools<81 so that it still works)."""
    root = logging.getLogger()
    level = root.level
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            return importlib.import_module(module)
    finally:
        root.setLevel(level)
