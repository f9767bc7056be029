"""Plots of a tagged dataset: tag histograms, reward and distance distributions, lengths, the funnel.

`PLOTS` maps a name to a function that writes one PNG and returns its path; `plot_all` draws every
one. `wandb_tables` gives the same numbers as W&B tables. A missing tag counts as "untagged", so a
partly tagged run plots without special cases.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: runs on headless machines and in tests
import matplotlib.pyplot as plt  # noqa: E402

from .schema import CATEGORICAL, DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES, response_length  # noqa: E402

UNTAGGED = "untagged"
TOP_LANGUAGES = 15


def _label(field: str, v) -> str:
    if v is None:
        return UNTAGGED
    s = str(v)
    return s.replace("\n", " ") if field == "llama_guard_2" else s  # "unsafe\nS2" -> "unsafe S2"


def category_counts(records: list[dict], field: str, order: tuple[str, ...] = (), top: int | None = None,
                    zeros: bool = False):
    """(label, count) pairs: the given order first (with zero counts too if `zeros`), then
    others by count, "untagged" last."""
    c = Counter(_label(field, r.get(field)) for r in records)
    keys = [k for k in order if zeros or k in c] + sorted((k for k in c if k not in order and k != UNTAGGED),
                                                 key=lambda k: (-c[k], k))
    if top is not None and len(keys) > top:
        c["other"] = sum(c[k] for k in keys[top:])
        keys = keys[:top] + ["other"]
    if UNTAGGED in c:
        keys.append(UNTAGGED)
    return [(k, c[k]) for k in keys]


def numbers(records: list[dict], field) -> tuple[list[float], int]:
    """Finite values of a field (or of a function of the record) and how many rows lacked one."""
    get = field if callable(field) else (lambda r: r.get(field))
    vals = [get(r) for r in records]
    ok = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return ok, len(vals) - len(ok)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _barh(ax, labels: list[str], counts: list[int], total: int, color) -> None:
    y = list(range(len(labels)))[::-1]  # first label on top
    ax.barh(y, counts, color=color)
    ax.set_yticks(y, labels)
    for yi, n in zip(y, counts):
        ax.text(n, yi, f" {n:,} ({100 * n / total:.1f}%)", va="center", fontsize=8)
    ax.set_xlim(0, max(counts + [1]) * 1.3)


def _bars(pairs, title: str, path) -> Path:
    labels, counts = [p[0] for p in pairs], [p[1] for p in pairs]
    total = sum(counts) or 1
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.35 * max(len(labels), 3)))
    _barh(ax, labels, counts, total, ["#bbbbbb" if lab == UNTAGGED else "#4c72b0" for lab in labels])
    ax.set_xlabel("rows")
    ax.set_title(f"{title} (n={total:,})")
    return _save(fig, path)


def _draw_hist(ax, vals: list[float], median_format: str) -> None:
    ax.hist(vals, bins=min(50, max(5, len(set(vals)))), color="#4c72b0", edgecolor="white")
    med = sorted(vals)[len(vals) // 2]
    ax.axvline(med, color="#dd8452", linestyle="--", label=f"median {med:{median_format}}")


def _hist(records, field, title: str, path, xlabel: str, note: str = "", marks: dict | None = None) -> Path:
    vals, missing = numbers(records, field)
    fig, ax = plt.subplots(figsize=(7, 4))
    if vals:
        _draw_hist(ax, vals, ".3g")
        for label, x in (marks or {}).items():
            ax.axvline(x, color="#555555", linestyle=":", label=label)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no tagged rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    ax.set_title(f"{title} (n={len(vals):,}" + (f", untagged {missing:,}" if missing else "") + note + ")")
    return _save(fig, path)


# -- one function per plot --------------------------------------------------------------------
def _categorical(field: str, order: tuple[str, ...] = (), top: int | None = None, zeros: bool = False):
    def plot(records, path) -> Path:
        return _bars(category_counts(records, field, order, top, zeros), field, path)

    return plot


def plot_instruct_reward(records, path) -> Path:
    # Table 5's thresholds (-12, and 0 for the reward difference) sit in this range.
    return _hist(records, "instruct_reward", "instruct_reward", path, "reward",
                 marks={"Table 5 threshold (> -12)": -12.0})


def plot_min_neighbor_distance(records, path) -> Path:
    # Exact duplicates sit at 0, which every Table 5 filter drops: say how many.
    zeros = sum(1 for r in records if r.get("min_neighbor_distance") == 0)
    return _hist(records, "min_neighbor_distance", "min_neighbor_distance", path,
                 "squared L2 to the nearest other instruction", note=f", at 0: {zeros:,}")


def instruction_length(r: dict) -> int:
    return len(r.get("instruction") or "")


def plot_lengths(records, path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, fn) in zip(axes, (("instruction", instruction_length),
                                     ("response (all assistant turns)", response_length))):
        vals, _ = numbers(records, fn)
        if vals:
            _draw_hist(ax, vals, ",.0f")
            ax.legend()
        ax.set_title(f"{name} length (n={len(vals):,})")
        ax.set_xlabel("characters")
        ax.set_ylabel("rows")
    return _save(fig, path)


def plot_funnel(funnel: list[tuple[str, int]], path) -> Path:
    steps, counts = [s for s, _ in funnel], [n for _, n in funnel]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.45 * max(len(steps), 2)))
    _barh(ax, steps, counts, counts[0] if counts and counts[0] else 1, "#55a868")
    ax.set_xlabel("rows left")
    ax.set_title("filter funnel (conditions in order, then the cut)")
    return _save(fig, path)


PLOTS = {
    "task_category": _categorical("task_category", TASK_CATEGORIES, zeros=True),
    "difficulty": _categorical("difficulty", DIFFICULTY_LEVELS, zeros=True),
    "input_quality": _categorical("input_quality", QUALITY_LEVELS, zeros=True),
    "language": _categorical("language", top=TOP_LANGUAGES), "llama_guard_2": _categorical("llama_guard_2", ("safe",)),
    "instruct_reward": plot_instruct_reward, "min_neighbor_distance": plot_min_neighbor_distance,
    "lengths": plot_lengths,
}


def plot_all(records: list[dict], out_dir, funnel=None) -> list[Path]:
    out = Path(out_dir)
    paths = [fn(records, out / f"{name}.png") for name, fn in PLOTS.items()]
    if funnel:
        paths.append(plot_funnel(funnel, out / "funnel.png"))
    return paths


def _hist_rows(vals: list[float], bins: int = 30) -> list[list[float]]:
    if not vals:
        return []
    counts, edges = np.histogram(vals, bins=bins)
    return [[float(a), float(b), int(c)] for a, b, c in zip(edges[:-1], edges[1:], counts)]


def wandb_tables(records: list[dict], funnel=None) -> dict:
    """Name -> wandb.Table to log with `run.log(...)`: counts per tag value, binned numeric tags,
    and the funnel. Binned, not raw, so a 3M-row set logs a few hundred cells."""
    import wandb

    out = {}
    for field, order in CATEGORICAL.items():
        out[f"tags/{field}"] = wandb.Table(columns=[field, "rows"],
                                           data=[[k, n] for k, n in category_counts(records, field, order)])
    for name, field in (("tags/instruct_reward", "instruct_reward"),
                        ("tags/min_neighbor_distance", "min_neighbor_distance"),
                        ("lengths/instruction_length", instruction_length),
                        ("lengths/response_length", response_length)):
        out[name] = wandb.Table(columns=["bin_start", "bin_end", "rows"], data=_hist_rows(numbers(records, field)[0]))
    if funnel:
        out["filter/funnel"] = wandb.Table(columns=["step", "rows"], data=[[s, n] for s, n in funnel])
    return out
