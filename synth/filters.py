"""Filtering tagged conversations into training sets: the paper's presets and a small query language.

A preset is data: conditions (expressions in the language below, applied in order, each one a
line of the funnel), then a cut to `size` rows. The paper's cut keeps the longest responses and
comes last (Table 5; the reference's data_filter.ipynb sorts by `len(response)` after the
conditions). Presets carry the paper's sizes; `size=` scales them for small runs, and a run
with fewer rows than `size` keeps them all.

    kept, funnel = apply(records, "pro-300k-filtered", size=1000)
    kept, funnel = apply(records, "instruct_reward > -5 and language == 'EN'")
    print(format_funnel(funnel))

The language is a Python expression evaluated per record, without `eval`:
    columns         any record field, plus the derived response_length (characters of all
                    assistant turns), instruction_length, turns and dedup (see below)
    comparisons     == != < <= > >= in, not in, is None, is not None; chains like 0 < x <= 5
    levels          input_quality and difficulty compare by rank: `input_quality >= good`,
                    `difficulty >= 'very easy'` (bare level names use _ for the space)
    logic           and, or, not; numbers, strings, lists; len(x), x.endswith(s), x.startswith(s),
                    x.lower(), x.strip()
A missing tag (None) fails: comparisons with None are unknown, `and`/`or`/`not` follow SQL's
three-valued logic, and a row whose condition ends unknown is dropped, as in a SQL WHERE.
An unknown column is an error that names it.

Near-duplicates: the paper's condition is `min_neighbor_distance > 0`, which drops every
member of an exact-duplicate group (Table 5). The reference release's filter instead keeps
one member per cluster: `dedup` is true when `min_similar_conversation_id` is None or equals
the row's own `id`. The Table 5 presets (air-300k-filtered, pro-filter-1..6) and mt-300k use
`min_neighbor_distance > 0`; pro-300k-filtered-card and pro-300k-filtered-repo use `dedup`;
the raw presets use neither.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import store
from .schema import COLUMNS as SCHEMA, LEVELS, response_length



log = logging.getLogger(__name__)


class FilterError(ValueError):
    pass



def _all3(values) -> bool | None:
    """Three-valued AND (SQL's): False wins, then unknown (None), then True."""
    unknown = False
    for v in values:
        if v is None:
            unknown = True
        elif not v:
            return False
    return None if unknown else True


def _any3(values) -> bool | None:
    """Three-valued OR: True wins, then unknown (None), then False."""
    unknown = False
    for v in values:
        if v is None:
            unknown = True
        elif v:
            return True
    return None if unknown else False

def is_dedup_keeper(r: dict) -> bool:
    # Reference data_filter.ipynb: keep a row with no similar row, or the cluster's lowest-id row.
    sim = r.get("min_similar_conversation_id")
    return sim is None or sim == r.get("id")


DERIVED: dict[str, Callable[[dict], Any]] = {
    "response_length": response_length,
    "instruction_length": lambda r: None if r.get("instruction") is None else len(r["instruction"]),
    "turns": lambda r: sum(m.get("role") == "user" for m in r["messages"]) if r.get("messages") else 1,
    "dedup": is_dedup_keeper,
}


# -- the expression language ------------------------------------------------------------------
_CMP = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
        ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
        ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_STR_METHODS = {"endswith", "startswith", "lower", "strip"}


def _rank(column: str, value):
    if not isinstance(value, str):
        return None
    levels = LEVELS[column]
    v = value.strip().lower()
    return levels.index(v) if v in levels else None


@dataclass
class Condition:
    """One compiled expression: `test(record)` is True, False or None (unknown, which fails)."""
    text: str
    columns: frozenset[str]
    test: Callable[[dict], bool | None]

    def __call__(self, r: dict) -> bool:
        return self.test(r) is True


def compile_condition(text: str) -> Condition:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise FilterError(f"cannot parse filter expression {text!r}: {e.msg}") from None
    columns: set[str] = set()

    def fail(node, what):
        raise FilterError(f"{what} in filter expression {text!r} (at {ast.unparse(node)!r}); "
                          "see synth/filters.py for the language")

    def level_operand(node, column):
        # The side opposite an ordinal column: a level name, bare or quoted, or a list of them.
        if isinstance(node, (ast.List, ast.Tuple)):
            ranks = tuple(level_operand(e, column) for e in node.elts)
            return lambda r: ranks
        if isinstance(node, ast.Name) and node.id not in SCHEMA and node.id not in DERIVED:
            word = node.id.replace("_", " ")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            word = node.value
        else:
            return None
        rank = _rank(column, word)
        if rank is None:
            fail(node, f"{word!r} is not a level of {column} (levels: {', '.join(LEVELS[column])})")
        return rank

    def build(node) -> Callable[[dict], Any]:
        if isinstance(node, ast.BoolOp):
            parts = [build(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda r: _all3(p(r) for p in parts)
            return lambda r: _any3(p(r) for p in parts)
        if isinstance(node, ast.UnaryOp):
            inner = build(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda r: (lambda v: None if v is None else not v)(inner(r))
            if isinstance(node.op, ast.USub):
                return lambda r: (lambda v: None if v is None else -v)(inner(r))
            fail(node, "unsupported operator")
        if isinstance(node, ast.Compare):
            return build_compare(node)
        if isinstance(node, ast.Name):
            name = node.id
            if name in DERIVED:
                columns.add(name)
                return DERIVED[name]
            columns.add(name)  # validated against the records in `apply`
            return lambda r: r.get(name)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            value = node.value
            return lambda r: value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [build(e) for e in node.elts]
            return lambda r: tuple(i(r) for i in items)
        if isinstance(node, ast.Call) and not node.keywords:
            args = [build(a) for a in node.args]
            if isinstance(node.func, ast.Name) and node.func.id == "len" and len(args) == 1:
                return lambda r: (lambda v: None if v is None else len(v))(args[0](r))
            if isinstance(node.func, ast.Attribute) and node.func.attr in _STR_METHODS:
                obj, method = build(node.func.value), node.func.attr

                def call(r):
                    v = obj(r)
                    if not isinstance(v, str):
                        return None
                    return getattr(v, method)(*(a(r) for a in args))
                return call
            fail(node, "unsupported function (allowed: len(x), x.endswith(s), x.startswith(s), x.lower(), x.strip())")
        fail(node, f"unsupported syntax {type(node).__name__}")

    def build_compare(node: ast.Compare):
        operands = [node.left, *node.comparators]
        steps = []
        for op, a, b in zip(node.ops, operands, operands[1:]):
            ordinal = next((n.id for n in (a, b) if isinstance(n, ast.Name) and n.id in LEVELS), None)
            if isinstance(op, (ast.Is, ast.IsNot)):
                if not (isinstance(b, ast.Constant) and b.value is None):
                    fail(node, "`is` only compares with None")
                fa, want = build(a), isinstance(op, ast.Is)
                steps.append(lambda r, fa=fa, want=want: (fa(r) is None) == want)
                continue
            if type(op) not in _CMP:
                fail(node, "unsupported comparison")
            fn = _CMP[type(op)]
            if ordinal:
                columns.add(ordinal)
                sides = []
                for n in (a, b):
                    if isinstance(n, ast.Name) and n.id == ordinal:
                        sides.append(lambda r, c=ordinal: _rank(c, r.get(c)))
                    else:
                        rank = level_operand(n, ordinal)
                        if rank is None:
                            fail(n, f"{ordinal} compares with level names only")
                        sides.append(rank if callable(rank) else (lambda r, k=rank: k))
                fa, fb = sides
            else:
                fa, fb = build(a), build(b)

            def step(r, fa=fa, fb=fb, fn=fn):
                x, y = fa(r), fb(r)
                if x is None or y is None or (isinstance(y, tuple) and None in y and x not in y):
                    return None
                try:
                    return fn(x, y)
                except TypeError:  # e.g. a string tag compared with a number: not a match
                    return None
            steps.append(step)

        return lambda r: _all3(s(r) for s in steps)

    test = build(tree.body)
    return Condition(text=" ".join(text.split()), columns=frozenset(columns), test=test)


def check_columns(conditions: Iterable[Condition], records: list[dict]) -> None:
    """Fail early, naming the column, rather than dropping every row for a typo."""
    present: set[str] = set()
    for r in records:
        present.update(r)
    for c in conditions:
        for col in sorted(c.columns):
            if col in DERIVED or col in present:
                continue
            if col in SCHEMA:
                if records:
                    raise FilterError(f"no record has column {col!r} (needed by {c.text!r}); run the tagger "
                                      "that writes it first, or choose a preset without it")
                continue
            known = sorted((present or set(SCHEMA)) | set(DERIVED))
            raise FilterError(f"unknown column {col!r} in filter expression {c.text!r}; "
                              f"columns: {', '.join(known)}")


# -- presets ----------------------------------------------------------------------------------
NEAR_DUP = "min_neighbor_distance > 0"  # Table 5: applied in every filtered set


@dataclass(frozen=True)
class Preset:
    """Conditions applied in order, then a cut to `size` rows.

    cut: "longest" keeps the `size` longest responses (Table 5); "longest-balanced" keeps
    size/2 longest with difficulty very easy/easy and size/2 longest with medium or harder
    (Pro Filter 6); "random" a seeded sample; "first" the first rows in dataset order;
    None keeps all (size is then ignored).
    """
    name: str
    conditions: tuple[str, ...]
    size: int | None = 300_000
    cut: str | None = "longest"
    source: str = ""

    @property
    def longest(self) -> bool:
        return bool(self.cut and self.cut.startswith("longest"))


_T5 = "paper Table 5"
PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("air-300k-filtered", ("input_quality >= good", "difficulty >= medium", "reward_difference > 0", NEAR_DUP),
           source=f"{_T5}: Magpie-Air-300K-Filtered, from Air 3M"),
    Preset("pro-300k-filtered", ("input_quality >= average", "instruct_reward > -12", NEAR_DUP),
           source=f"{_T5}: Magpie-Pro-300K-Filtered (= Pro Filter 1), from Pro 1M"),
    Preset("pro-filter-2", ("input_quality >= good", "difficulty >= easy", "instruct_reward > -12", NEAR_DUP),
           source=f"{_T5}: Pro Filter 2"),
    Preset("pro-filter-3", ("instruct_reward > -12", NEAR_DUP), source=f"{_T5}: Pro Filter 3"),
    Preset("pro-filter-4", ("input_quality >= good", "difficulty >= easy", "reward_difference > 0", NEAR_DUP),
           source=f"{_T5}: Pro Filter 4"),
    # 338K is what these conditions left of Pro 1M in the paper, not a target: no cut.
    Preset("pro-filter-5", ("input_quality >= good", "difficulty >= easy", "instruct_reward > -12", NEAR_DUP),
           size=None, cut=None, source=f"{_T5}: Pro Filter 5 (338K in the paper, no length cut)"),
    # "50% easy + 50% harder": our reading is very easy/easy vs medium and up, each half the
    # longest of its group; an untagged difficulty belongs to neither, so it is dropped first.
    Preset("pro-filter-6", ("instruct_reward > -12", NEAR_DUP, "difficulty is not None"), size=200_000,
           cut="longest-balanced", source=f"{_T5}: Pro Filter 6 (200K longest, 50% easy + 50% harder)"),
    # The MT sets start from "300K difficult questions" (paper section 4.5); the filter is not
    # published. Ours: the Air-300K-Filtered quality/difficulty bar without the reward
    # difference (which needs base-model answers), longest responses.
    Preset("mt-300k", ("difficulty >= medium", "input_quality >= good", NEAR_DUP),
           source="paper section 4.5 '300K difficult questions'; exact filter unpublished, our choice"),
    Preset("raw-300k", (), cut="random", source="a seeded random 300K of the raw set (paper Table 1 300K-Raw)"),
    Preset("raw-300k-first", (), cut="first", source="dataset card: 300K-Raw is the first 300K raw rows"),
    Preset("pro-300k-filtered-card", ("input_quality >= average", "instruct_reward >= -10",
                                      "not instruction.endswith(':')", "dedup"),
           source="Magpie-Pro-300K-Filtered dataset card: reward >= -10, drop instructions ending with ':', "
                  "remove repetition"),
    Preset("pro-300k-filtered-repo", ("input_quality >= good", "instruct_reward > -10",
                                      "not instruction.endswith(':')", "dedup"),
           source="reference repo data_sft/data_filter.ipynb (the notebook's thresholds differ from the card's)"),
]}
PRESETS["pro-filter-1"] = dataclasses.replace(PRESETS["pro-300k-filtered"], name="pro-filter-1")


def resolve(preset: str | Preset | None = None, expression: str | None = None, size: int | None = None) -> Preset:
    """A preset by name, an expression, or a preset plus an extra expression (applied before the cut)."""
    if isinstance(preset, str) and preset not in PRESETS:
        looks_like_name = "-" in preset and preset.replace("-", "").isalnum()  # "pro-filter-9", not "x > -1"
        if expression is None and not looks_like_name:
            preset, expression = None, preset  # `apply(records, "instruct_reward > -5")`
        else:
            raise FilterError(f"unknown filter preset {preset!r}; choose from {', '.join(sorted(PRESETS))} "
                              "or pass an expression")
    if preset is None:
        if expression is None:
            raise FilterError("give a filter preset or an expression")
        base = Preset("expression", (), size=None, cut=None, source="user expression")
    else:
        base = PRESETS[preset] if isinstance(preset, str) else preset
    if expression is not None:
        base = dataclasses.replace(base, conditions=base.conditions + (expression,))
    if size is not None and base.cut is None and base.name == "expression":
        base = dataclasses.replace(base, cut="longest")  # an expression with a size: the paper's cut
    if size is not None and base.cut is not None:
        base = dataclasses.replace(base, size=int(size))
    return base


def _cut(rows: list[int], records: list[dict], p: Preset, seed: int) -> tuple[list[int], str]:
    """Indices (in input order) kept by the preset's cut, and the funnel label."""
    n = p.size
    if p.cut == "random":
        picked = sorted(random.Random(seed).sample(rows, min(n, len(rows))))
        return picked, f"random {n:,} (seed {seed})"
    if p.cut == "first":
        return rows[:n], f"first {n:,}"

    def longest(ix: list[int], k: int) -> list[int]:
        # Ties go to the earlier row, so the cut is deterministic.
        return sorted(sorted(ix, key=lambda i: (-response_length(records[i]), i))[:k])

    if p.cut == "longest":
        return longest(rows, n), f"{n:,} longest responses"
    if p.cut == "longest-balanced":
        easy_rank = LEVELS["difficulty"].index("easy")
        ranks = {i: _rank("difficulty", records[i].get("difficulty")) for i in rows}
        easy = [i for i in rows if ranks[i] is not None and ranks[i] <= easy_rank]
        harder = [i for i in rows if ranks[i] is not None and ranks[i] > easy_rank]
        # No top-up from the other group when one is short: the mix is the point of Filter 6.
        return sorted(longest(easy, n // 2) + longest(harder, n - n // 2)), \
            f"{n:,} longest: {n // 2:,} very easy/easy + {n - n // 2:,} medium or harder"
    raise FilterError(f"unknown cut {p.cut!r} in preset {p.name!r}")


def apply(records: list[dict], preset: str | Preset, size: int | None = None, seed: int = 0,
          expression: str | None = None) -> tuple[list[dict], list[tuple[str, int]]]:
    """Filter `records` by a preset name, a Preset, or an expression.

    Returns the kept records (in input order) and the funnel: (step, rows left) from
    ("input", n) through each condition to the cut.
    """
    p = resolve(preset, expression, size)
    conditions = [compile_condition(t) for t in p.conditions]
    check_columns(conditions, records)
    rows = list(range(len(records)))
    funnel = [("input", len(rows))]
    for c in conditions:
        rows = [i for i in rows if c(records[i])]
        funnel.append((c.text, len(rows)))
    if p.cut is not None:
        rows, label = _cut(rows, records, p, seed)
        funnel.append((label, len(rows)))
    return [records[i] for i in rows], funnel


def format_funnel(funnel: list[tuple[str, int]]) -> str:
    """The funnel as aligned text lines: step, rows left, share of the input."""
    if not funnel:
        return ""
    total = funnel[0][1] or 1
    w = max(len(s) for s, _ in funnel)
    return "\n".join(f"{s:<{w}}  {n:>9,}  {100 * n / total:6.2f}%" for s, n in funnel)


# -- the stage --------------------------------------------------------------------------------
SHARD_ROWS = 100_000


def filter_dataset(in_dir, out_dir, preset: str | None, size: int | None = None, expression: str | None = None,
                   seed: int = 0) -> dict:
    """Write `out_dir` with the rows of `in_dir` (a tagged dataset directory) that `preset`
    (and `expression`, if given) keep. A complete run of the same config is left as it is."""
    src = store.DatasetDir(in_dir)
    src_manifest = src.require_complete()
    p = resolve(preset, expression, size)
    config = {"preset": p.name, "conditions": list(p.conditions), "cut": p.cut, "size": p.size,
              "seed": seed, "input_config_hash": src_manifest.get("config_hash")}
    ds = store.DatasetDir(out_dir)
    m = ds.begin("filter", config, input=str(in_dir), input_stage=src_manifest.get("stage"), source=p.source)
    if m.get("status") == "complete":
        return {**m["counts"], "funnel": m.get("funnel")}
    kept, funnel = apply(src.records(), p, seed=seed)
    for k in range(0, max(len(kept), 1), SHARD_ROWS):
        ds.write_shard(k // SHARD_ROWS, kept[k:k + SHARD_ROWS], {"kept": len(kept[k:k + SHARD_ROWS])})
    counts = {"input": funnel[0][1], "kept": len(kept)}
    ds.finish(counts, funnel=funnel, preset=p.name, conditions=list(p.conditions))
    log.info("filter %s: kept %d of %d rows -> %s\n%s", p.name, len(kept), funnel[0][1], out_dir,
             format_funnel(funnel))
    return {**counts, "funnel": [list(step) for step in funnel]}  # as the manifest stores it
