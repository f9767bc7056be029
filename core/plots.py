"""pyplot for the project's figures, imported when one is drawn: the Agg backend (files only, so plots work on
headless machines and in tests), and no 0.4 s pyplot import in processes that never plot (every stage process
imports synth.stats)."""
from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
