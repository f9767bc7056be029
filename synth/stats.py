"""Plots of a tagged dataset: tag histograms, reward and distance distributions, lengths, the funnel.

Everything here reads a `Profile`: the numbers behind the plots (label counts, numeric tags and lengths as
float arrays), gathered one Arrow table at a time from a dataset directory, so a 1M-row set costs a few
float arrays, never a dict per row. `PLOTS` maps a name to a function that writes one PNG and returns its
path; `plot_all` draws every one, and for a steered run (a `steer` column: synth/steering.py) the task categories
of each steer value. `wandb_tables` gives the same numbers as W&B tables. Each takes a dataset
directory, a Profile, or a list of dicts (tests, small sets). A missing tag counts as "untagged", so a
partly tagged run plots without special cases.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import store
from core.plots import pyplot
from core.schema import CATEGORICAL, DIFFICULTY_LEVELS, QUALITY_LEVELS, STEER_KINDS, TASK_CATEGORIES

from .steering import label as steer_label

UNTAGGED = "untagged"
TOP_LANGUAGES = 15
NUMERIC = ("instruct_reward", "reward_difference", "min_neighbor_distance", "repeat_count")
LENGTHS = ("instruction_length", "response_length")  # characters; the response: all assistant turns
REASONING_LENGTH = "reasoning_length"  # characters of a thinking model's reasoning, rows that have one
BATCH_ROWS = 10_000  # rows read at a time: ~50 MB of text at the paper's lengths
STEER_FIELD = "task_category"  # the tag counted per steer value (issue 23: what each steer makes the model ask)


def _label(field: str, v) -> str:
    if v is None:
        return UNTAGGED
    s = str(v)
    return s.replace("\n", " ") if field == "llama_guard_2" else s  # "unsafe\nS2" -> "unsafe S2"


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _chars(table: pa.Table, column: str) -> np.ndarray:
    """len(r.get(column) or "") for every row."""
    if column not in table.column_names or not _is_text(table.schema.field(column).type):
        return np.zeros(table.num_rows, np.int64)
    return pc.fill_null(pc.utf8_length(table[column]), 0).to_numpy().astype(np.int64)


def _turns(table: pa.Table, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: whether it has `messages` (a non-empty list), its turns of `role`, and their characters."""
    n = table.num_rows
    msgs = table["messages"] if "messages" in table.column_names else None
    is_list = msgs is not None and (pa.types.is_list(msgs.type) or pa.types.is_large_list(msgs.type))
    if not is_list or not pa.types.is_struct(msgs.type.value_type):
        return np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, np.int64)
    has = pc.fill_null(pc.list_value_length(msgs), 0).to_numpy() > 0
    flat, parent = pc.list_flatten(msgs), pc.list_parent_indices(msgs).to_numpy()
    names = {f.name for f in msgs.type.value_type}
    if "role" not in names:
        return has, np.zeros(n, np.int64), np.zeros(n, np.int64)
    mine = pc.fill_null(pc.equal(pc.struct_field(flat, "role"), role), False).to_numpy(zero_copy_only=False)
    chars = (pc.fill_null(pc.utf8_length(pc.struct_field(flat, "content")), 0).to_numpy(zero_copy_only=False)
             if "content" in names and _is_text(msgs.type.value_type.field("content").type)
             else np.zeros(len(mine), np.int64))
    return (has, np.bincount(parent[mine], minlength=n).astype(np.int64),
            np.bincount(parent[mine], weights=chars[mine], minlength=n).astype(np.int64))


def response_lengths(table: pa.Table) -> np.ndarray:
    """The response length of every row of `table`, the one definition (the filter's SQL measures the same, tested):
    the characters the model wrote, all assistant turns for multi-turn records, else the response."""
    has, _, chars = _turns(table, "assistant")
    return np.where(has, chars, _chars(table, "response"))


def user_turns(table: pa.Table) -> np.ndarray:
    """User turns per row: those of `messages`, else 1 (an instruction and its response)."""
    has, turns, _ = _turns(table, "user")
    return np.where(has, turns, 1)


def _finite(table: pa.Table, column: str) -> np.ndarray:
    """The finite numbers of a column as floats (a bool, text or missing column has none)."""
    if column not in table.column_names:
        return np.zeros(0)
    t = table.schema.field(column).type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return np.zeros(0)
    v = table[column].to_numpy().astype(float)  # nulls become NaN
    return v[np.isfinite(v)]


class Profile:
    """The numbers behind the plots, the W&B tables, the tag summary and the card, gathered a table at a time:
    label counts of the categorical tags, the finite values of the numeric tags and the lengths (8 bytes a row),
    rows with a value per column (coverage), user turns per row, and for a steered set the rows of each (steer
    value, task category). Never the rows themselves."""
    COLUMNS = ("instruction", "response", "messages", "steer", "reasoning", "reasoning_closed", *CATEGORICAL,
               *NUMERIC)  # what it reads of a dataset

    def __init__(self):
        self.rows = 0
        self.counts: dict[str, Counter] = {f: Counter() for f in CATEGORICAL}
        self.non_null: dict[str, int] = {}  # column -> rows with a value, for every column seen
        self.turns: Counter = Counter()
        self.steer: dict[str, Counter] = {}  # steer kind -> Counter of (its value, STEER_FIELD label)
        self._values: dict[str, list[np.ndarray]] = {f: [] for f in (*NUMERIC, *LENGTHS, REASONING_LENGTH)}
        self.reasoning_unclosed = 0  # rows whose thinking never ended (reasoning_closed false): no answer

    def add(self, table: pa.Table) -> Profile:
        n = table.num_rows
        self.rows += n
        for name in table.column_names:
            self.non_null[name] = self.non_null.get(name, 0) + n - table[name].null_count
        for f in CATEGORICAL:
            if f in table.column_names:
                vc = pc.value_counts(table[f])
                for v, k in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                    self.counts[f][_label(f, v)] += k
            elif n:
                self.counts[f][UNTAGGED] += n
        for f in NUMERIC:
            self._values[f].append(_finite(table, f))
        self._values["instruction_length"].append(_chars(table, "instruction").astype(float))
        self._values["response_length"].append(response_lengths(table).astype(float))
        if "reasoning" in table.column_names:  # a thinking model's answers: the length of each row's thinking
            has = pc.is_valid(table["reasoning"]).to_numpy(zero_copy_only=False)
            self._values[REASONING_LENGTH].append(_chars(table, "reasoning")[has].astype(float))
        if "reasoning_closed" in table.column_names:
            self.reasoning_unclosed += int(pc.sum(pc.equal(table["reasoning_closed"], False)).as_py() or 0)
        turns, k = np.unique(user_turns(table), return_counts=True)
        self.turns.update({int(t): int(c) for t, c in zip(turns, k)})
        if "steer" in table.column_names and pa.types.is_struct(table.schema.field("steer").type):
            self._add_steer(table)
        return self

    def _add_steer(self, table: pa.Table) -> None:
        """Count (steer value, task category) pairs per steer kind, grouped by Arrow: no row becomes a dict."""
        n = table.num_rows
        cat = (table[STEER_FIELD] if STEER_FIELD in table.column_names else pa.nulls(n)).cast(pa.string())
        for f in table.schema.field("steer").type:
            values = pc.struct_field(table["steer"], f.name)
            if not pa.types.is_string(values.type):
                values = values.cast(pa.string())
            pairs = pa.table({"v": values, "c": cat}).group_by(["v", "c"]).aggregate([([], "count_all")])
            counter = self.steer.setdefault(f.name, Counter())
            for v, c, k in zip(*(pairs[x].to_pylist() for x in ("v", "c", "count_all"))):
                counter[(v, _label(STEER_FIELD, c))] += k

    def by_steer(self) -> dict[str, dict]:
        """The task-category distribution per steer: for each steer kind of the set (prefill, system, persona, topic,
        language), its `values` (most rows first; None: rows without one), the `categories` (the schema's order,
        then others, "untagged" last), `counts[i][j]` rows of value i in category j, and `rows[i]` of value i."""
        out = {}
        for kind in sorted(self.steer, key=lambda k: (STEER_KINDS + (k,)).index(k)):
            c, totals, cats = self.steer[kind], Counter(), Counter()
            for (v, cat), k in c.items():
                totals[v] += k
                cats[cat] += k
            values = sorted(totals, key=lambda v: (-totals[v], v or ""))
            order = [k for k in TASK_CATEGORIES if k in cats] + sorted(
                k for k in cats if k not in TASK_CATEGORIES and k != UNTAGGED) + [k for k in (UNTAGGED,) if k in cats]
            out[kind] = {"values": values, "categories": order, "rows": [totals[v] for v in values],
                         "counts": [[c[(v, k)] for k in order] for v in values]}
        return out

    def values(self, name: str) -> np.ndarray:
        """The finite values of a numeric tag or a length (NUMERIC, LENGTHS), in row order."""
        parts = self._values[name]
        if len(parts) != 1:
            parts[:] = [np.concatenate(parts) if parts else np.zeros(0)]
        return parts[0]

    def missing(self, name: str) -> int:
        """Rows without a finite value of `name`."""
        return self.rows - len(self.values(name))

    def category_counts(self, field: str, order: tuple[str, ...] = (), top: int | None = None,
                        zeros: bool = False) -> list[tuple[str, int]]:
        """(label, count) pairs: the given order first (with zero counts too if `zeros`), then
        others by count, "untagged" last."""
        c = Counter(self.counts[field])
        keys = [k for k in order if zeros or k in c] + sorted((k for k in c if k not in order and k != UNTAGGED),
                                                     key=lambda k: (-c[k], k))
        if top is not None and len(keys) > top:
            c["other"] = sum(c[k] for k in keys[top:])
            keys = keys[:top] + ["other"]
        if UNTAGGED in c:
            keys.append(UNTAGGED)
        return [(k, c[k]) for k in keys]

    @classmethod
    def of(cls, source) -> Profile:
        """`source`: a Profile (as it is), a dataset directory (streamed: only COLUMNS, BATCH_ROWS at a time)
        or a list of dicts."""
        if isinstance(source, Profile):
            return source
        p = cls()
        if isinstance(source, (str, os.PathLike, store.DatasetDir)):
            ds = source if isinstance(source, store.DatasetDir) else store.DatasetDir(source)
            for t in ds.batches(BATCH_ROWS, list(cls.COLUMNS)):
                p.add(t)
            return p
        for i in range(0, len(source), BATCH_ROWS):
            p.add(pa.Table.from_pylist([{c: r.get(c) for c in cls.COLUMNS} for r in source[i:i + BATCH_ROWS]]))
        return p


def category_counts(source, field: str, order: tuple[str, ...] = (), top: int | None = None, zeros: bool = False):
    """(label, count) pairs of `source` (see Profile.of): the given order first (with zero counts too if
    `zeros`), then others by count, "untagged" last."""
    return Profile.of(source).category_counts(field, order, top, zeros)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
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
    fig, ax = pyplot().subplots(figsize=(7, 0.6 + 0.35 * max(len(labels), 3)))
    _barh(ax, labels, counts, total, ["#bbbbbb" if lab == UNTAGGED else "#4c72b0" for lab in labels])
    ax.set_xlabel("rows")
    ax.set_title(f"{title} (n={total:,})")
    return _save(fig, path)


def _draw_hist(ax, vals: np.ndarray, median_format: str) -> None:
    ax.hist(vals, bins=min(50, max(5, np.unique(vals).size)), color="#4c72b0", edgecolor="white")
    med = np.partition(vals, len(vals) // 2)[len(vals) // 2]  # sorted(vals)[n // 2]
    ax.axvline(med, color="#dd8452", linestyle="--", label=f"median {med:{median_format}}")


def _hist(profile: Profile, field: str, title: str, path, xlabel: str, note: str = "",
          marks: dict | None = None) -> Path:
    vals, missing = profile.values(field), profile.missing(field)
    fig, ax = pyplot().subplots(figsize=(7, 4))
    if len(vals):
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


# -- one function per plot, each from a Profile -----------------------------------------------
def _categorical(field: str, order: tuple[str, ...] = (), top: int | None = None, zeros: bool = False):
    def plot(profile: Profile, path) -> Path:
        return _bars(profile.category_counts(field, order, top, zeros), field, path)

    return plot


def plot_instruct_reward(profile: Profile, path) -> Path:
    # Table 5's thresholds (-12, and 0 for the reward difference) sit in this range.
    return _hist(profile, "instruct_reward", "instruct_reward", path, "reward",
                 marks={"Table 5 threshold (> -12)": -12.0})


def plot_min_neighbor_distance(profile: Profile, path) -> Path:
    # Exact duplicates sit at 0, which every Table 5 filter drops: say how many.
    zeros = int((profile.values("min_neighbor_distance") == 0).sum())
    return _hist(profile, "min_neighbor_distance", "min_neighbor_distance", path,
                 "squared L2 to the nearest other instruction", note=f", at 0: {zeros:,}")


def plot_lengths(profile: Profile, path) -> Path:
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 4))
    for ax, (name, field) in zip(axes, (("instruction", "instruction_length"),
                                        ("response (all assistant turns)", "response_length"))):
        vals = profile.values(field)
        if len(vals):
            _draw_hist(ax, vals, ",.0f")
            ax.legend()
        ax.set_title(f"{name} length (n={len(vals):,})")
        ax.set_xlabel("characters")
        ax.set_ylabel("rows")
    return _save(fig, path)


def plot_task_category_by_steer(profile: Profile, path) -> Path:
    """For each steer kind, one bar per value (its top 15 by rows), split by task category in shares of its rows."""
    table = profile.by_steer()
    cats = sorted({c for t in table.values() for c in t["categories"]}, key=lambda c: (
        TASK_CATEGORIES.index(c) if c in TASK_CATEGORIES else len(TASK_CATEGORIES) + (c == UNTAGGED), c))
    # tab20's strong hues first, then their light pairs: neighbouring categories never share a hue.
    colors = {c: ("#bbbbbb" if c == UNTAGGED else pyplot().get_cmap("tab20")((2 * i) % 20 + (2 * i) // 20 % 2))
              for i, c in enumerate(cats)}
    heights = [min(len(t["values"]), 15) for t in table.values()] or [1]
    fig, axes = pyplot().subplots(len(heights), 1, figsize=(10, 1.2 + sum(0.32 * h + 0.8 for h in heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (kind, t) in zip(axes[:, 0], table.items()):
        values, y = t["values"][:15], list(range(min(len(t["values"]), 15)))[::-1]
        left = np.zeros(len(values))
        for j, c in enumerate(t["categories"]):
            share = np.array([t["counts"][i][j] / (t["rows"][i] or 1) for i in range(len(values))])
            ax.barh(y, share, left=left, color=colors[c], label=c)
            left += share
        ax.set_yticks(y, [f"{steer_label(v, 48)} (n={n:,})" for v, n in zip(values, t["rows"])], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title(f"{STEER_FIELD} by {kind}", fontsize=10)
    handles = [pyplot().Rectangle((0, 0), 1, 1, color=colors[c]) for c in cats]
    fig.legend(handles, cats, loc="lower center", ncol=min(len(cats), 6), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("share of the value's rows")
    fig.tight_layout(rect=(0, 0.04 + 0.02 * (len(cats) // 6), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_funnel(funnel: list[tuple[str, int]], path) -> Path:
    steps, counts = [s for s, _ in funnel], [n for _, n in funnel]
    fig, ax = pyplot().subplots(figsize=(8, 0.8 + 0.45 * max(len(steps), 2)))
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


def plot_all(source, out_dir, funnel=None) -> list[Path]:
    """Every plot of `source` (a dataset directory, a Profile or a list of dicts) as PNGs in `out_dir`."""
    profile, out = Profile.of(source), Path(out_dir)
    paths = [fn(profile, out / f"{name}.png") for name, fn in PLOTS.items()]
    if profile.steer:
        paths.append(plot_task_category_by_steer(profile, out / f"{STEER_FIELD}_by_steer.png"))
    if funnel:
        paths.append(plot_funnel(funnel, out / "funnel.png"))
    return paths


def _hist_rows(vals: np.ndarray, bins: int = 30) -> list[list[float]]:
    if not len(vals):
        return []
    counts, edges = np.histogram(vals, bins=bins)
    return [[float(a), float(b), int(c)] for a, b, c in zip(edges[:-1], edges[1:], counts)]


def wandb_tables(source, funnel=None) -> dict:
    """Name -> wandb.Table to log with `run.log(...)`: counts per tag value, binned numeric tags,
    and the funnel, from `source` (as plot_all). Binned, not raw, so a 3M-row set logs a few hundred cells."""
    import wandb

    profile, out = Profile.of(source), {}
    for field, order in CATEGORICAL.items():
        out[f"tags/{field}"] = wandb.Table(columns=[field, "rows"],
                                           data=[[k, n] for k, n in profile.category_counts(field, order)])
    for name, field in (("tags/instruct_reward", "instruct_reward"),
                        ("tags/min_neighbor_distance", "min_neighbor_distance"),
                        ("lengths/instruction_length", "instruction_length"),
                        ("lengths/response_length", "response_length"),
                        *((("lengths/reasoning_length", REASONING_LENGTH),) if len(profile.values(REASONING_LENGTH))
                          else ())):
        out[name] = wandb.Table(columns=["bin_start", "bin_end", "rows"], data=_hist_rows(profile.values(field)))
    if profile.steer:
        out[f"tags/{STEER_FIELD}_by_steer"] = wandb.Table(
            columns=["steer", "value", STEER_FIELD, "rows"],
            data=[[kind, v, c, n] for kind, t in profile.by_steer().items() for v, row in zip(t["values"], t["counts"])
                  for c, n in zip(t["categories"], row) if n])
    if funnel:
        out["filter/funnel"] = wandb.Table(columns=["step", "rows"], data=[[s, n] for s, n in funnel])
    return out
