"""Filtering tagged conversations into training sets: the paper's presets, as SQL over the Parquet shards.

A preset is data: conditions (SQL boolean expressions, applied in order, each one a line of the funnel), then
a cut to `size` rows. The paper's cut keeps the longest responses and comes last (Table 5; the reference's
data_filter.ipynb sorts by `len(response)` after the conditions). Presets carry the paper's sizes; `size=`
scales them for small runs; fewer rows than `size` are all kept.

    validate("pro-300k-filtered", "language = 'EN'", 1000)  # before any model loads: the Preset, or FilterError
    counts = filter_dataset("runs/x/tagged", "runs/x/filtered", "pro-300k-filtered", size=1000)
    kept, funnel = apply(records, "instruct_reward > -5 AND language = 'EN'")  # a list of dicts (tests)

A condition is one DuckDB SQL expression over a row's columns and DERIVED, e.g. "NOT ends_with(instruction,
':')". input_quality and difficulty compare by rank with quoted level names ("input_quality >= 'good'", IN,
BETWEEN); a value outside the levels, in any case, counts as missing. A missing tag (NULL) fails, as in a
WHERE. An unknown column, function or level is an error that names it.

Near-duplicates: the paper's `min_neighbor_distance > 0` drops every member of an exact-duplicate group
(Table 5, our Table 5 presets and mt-300k); the reference release keeps one member per cluster (`dedup`, the
-card and -repo presets). The raw presets use neither.

Scale: DuckDB streams the shards once for the conditions and the cut key (a few bytes a row), then pyarrow
copies the kept rows: 3M rows never sit in memory as Python objects (benchmarks/filter.py).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import random

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import store
from core.schema import COLUMNS as SCHEMA
from core.schema import LEVELS

log = logging.getLogger(__name__)


class FilterError(ValueError):
    pass


# -- presets ----------------------------------------------------------------------------------
NEAR_DUP = "min_neighbor_distance > 0"  # Table 5: applied in every filtered set


@dataclasses.dataclass(frozen=True)
class Preset:
    """Conditions applied in order, then a cut to `size` rows. cut: "longest" keeps the `size` longest responses
    (Table 5); "longest-balanced" the size/2 longest with difficulty very easy/easy and the size/2 longest with
    medium or harder (Pro Filter 6); "categories" `size` rows shared as evenly as the task categories allow (a
    category with fewer rows keeps them all and leaves its share to the others), seeded within a category;
    "random" a seeded sample; "first" the first rows in dataset order; None keeps all (size is then ignored).
    Ties go to the earlier row: cuts are deterministic."""
    name: str
    conditions: tuple[str, ...]
    size: int | None = 300_000
    cut: str | None = "longest"
    source: str = ""


_T5 = "paper Table 5"
_GOOD, _AVERAGE = "input_quality >= 'good'", "input_quality >= 'average'"
_EASY, _MEDIUM = "difficulty >= 'easy'", "difficulty >= 'medium'"
PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("air-300k-filtered", (_GOOD, _MEDIUM, "reward_difference > 0", NEAR_DUP),
           source=f"{_T5}: Magpie-Air-300K-Filtered, from Air 3M"),
    Preset("pro-300k-filtered", (_AVERAGE, "instruct_reward > -12", NEAR_DUP),
           source=f"{_T5}: Magpie-Pro-300K-Filtered (= Pro Filter 1), from Pro 1M"),
    Preset("pro-filter-2", (_GOOD, _EASY, "instruct_reward > -12", NEAR_DUP), source=f"{_T5}: Pro Filter 2"),
    Preset("pro-filter-3", ("instruct_reward > -12", NEAR_DUP), source=f"{_T5}: Pro Filter 3"),
    Preset("pro-filter-4", (_GOOD, _EASY, "reward_difference > 0", NEAR_DUP), source=f"{_T5}: Pro Filter 4"),
    # 338K is what these conditions left of Pro 1M in the paper, not a target: no cut.
    Preset("pro-filter-5", (_GOOD, _EASY, "instruct_reward > -12", NEAR_DUP),
           size=None, cut=None, source=f"{_T5}: Pro Filter 5 (338K in the paper, no length cut)"),
    # "50% easy + 50% harder": our reading is very easy/easy vs medium and up, each half the longest of its
    # group; an untagged difficulty belongs to neither, so it is dropped first.
    Preset("pro-filter-6", ("instruct_reward > -12", NEAR_DUP, "difficulty IS NOT NULL"), size=200_000,
           cut="longest-balanced", source=f"{_T5}: Pro Filter 6 (200K longest, 50% easy + 50% harder)"),
    # The MT sets start from "300K difficult questions" (paper section 4.5); the filter is not published. Ours:
    # the Air-300K-Filtered quality/difficulty bar without the reward difference (it needs base-model answers).
    Preset("mt-300k", (_MEDIUM, _GOOD, NEAR_DUP),
           source="paper section 4.5 '300K difficult questions'; exact filter unpublished, our choice"),
    # Preference data (DPO): the instructions of the released Magpie-Air/Pro-DPO-100K sets. High quality and not
    # easy, the reward floor of the released sets' selection, then task categories balanced so that information
    # and advice seeking, most of a raw set, do not make most of the pairs.
    Preset("dpo-100k", (_MEDIUM, _GOOD, "instruct_reward >= -5"), size=100_000, cut="categories",
           source="Magpie-Air/Pro-DPO-100K-v0.1 selection: difficulty >= medium, input quality >= good, "
                  "reward >= -5, task categories balanced"),
    Preset("dpo-balanced", (), size=100_000, cut="categories",
           source="task categories balanced, no tag conditions (tiny profile: the stand-in judge's labels keep "
                  "nothing under dpo-100k)"),
    # Reasoning data (Magpie-Reasoning-V2 style): an answer whose thinking never ended has no answer at all.
    Preset("reasoning-closed", ("reasoning_closed", NEAR_DUP), size=None, cut=None,
           source="ours: answers whose thinking ended (reasoning_closed), near-duplicates out (paper Table 5's rule)"),
    Preset("raw-300k", (), cut="random", source="a seeded random 300K of the raw set (paper Table 1 300K-Raw)"),
    Preset("raw-300k-first", (), cut="first", source="dataset card: 300K-Raw is the first 300K raw rows"),
    Preset("pro-300k-filtered-card", (_AVERAGE, "instruct_reward >= -10", "NOT ends_with(instruction, ':')", "dedup"),
           source="Magpie-Pro-300K-Filtered dataset card: reward >= -10, drop instructions ending with ':', "
                  "remove repetition"),
    Preset("pro-300k-filtered-repo", (_GOOD, "instruct_reward > -10", "NOT ends_with(instruction, ':')", "dedup"),
           source="reference repo data_sft/data_filter.ipynb (the notebook's thresholds differ from the card's)"),
]}
PRESETS["pro-filter-1"] = dataclasses.replace(PRESETS["pro-300k-filtered"], name="pro-filter-1")


def resolve(preset: str | Preset | None = None, expression: str | None = None, size: int | None = None) -> Preset:
    """A preset by name, an expression, or a preset plus an extra expression (applied before the cut)."""
    if isinstance(preset, str) and preset not in PRESETS:
        looks_like_name = "-" in preset and preset.replace("-", "").isalnum()  # "pro-filter-9", not "x > -1"
        if expression is not None or looks_like_name:
            raise FilterError(f"unknown filter preset {preset!r}; choose from {', '.join(sorted(PRESETS))} "
                              "or pass an expression")
        preset, expression = None, preset  # `apply(records, "instruct_reward > -5")`
    if preset is None and expression is None:
        raise FilterError("give a filter preset or an expression")
    base = (Preset("expression", (), size=None, cut=None, source="user expression") if preset is None
            else PRESETS[preset] if isinstance(preset, str) else preset)
    if expression is not None:
        base = dataclasses.replace(base, conditions=base.conditions + (expression,))
    if size is not None and (base.cut is not None or base.name == "expression"):  # an expression: the paper's cut
        base = dataclasses.replace(base, size=int(size), cut=base.cut or "longest")
    return base


# -- the language: DuckDB expressions, checked on their parse tree ---------------------------
_ASSISTANT_CHARS = "list_sum([length(coalesce(m.content, '')) FOR m IN messages IF m.role = 'assistant'])"
# name -> (SQL, the columns it reads). response_length is what the paper's length cut sorts by: the characters
# the model wrote, all assistant turns for multi-turn records (as stats.response_lengths). dedup is the reference
# release's rule (data_filter.ipynb): keep a row with no similar row, or the cluster's lowest-id row.
DERIVED: dict[str, tuple[str, tuple[str, ...]]] = {
    "response_length": ((f"CAST(CASE WHEN len(messages) > 0 THEN coalesce({_ASSISTANT_CHARS}, 0) "
                         "ELSE length(coalesce(response, '')) END AS BIGINT)"), ("messages", "response")),
    "instruction_length": ("length(instruction)", ("instruction",)),
    # a thinking model's reasoning, in characters (0: none; the first answer's: step 2's `reasoning` column)
    "reasoning_length": ("CAST(coalesce(length(reasoning), 0) AS BIGINT)", ("reasoning",)),
    "turns": ("CASE WHEN len(messages) > 0 THEN len([1 FOR m IN messages IF m.role = 'user']) ELSE 1 END",
              ("messages",)),
    "dedup": ("(min_similar_conversation_id IS NULL OR min_similar_conversation_id = id)",
              ("id", "min_similar_conversation_id")),
}
_COMPARE = {"COMPARISON": ("left", "right"), "BETWEEN": ("input", "lower", "upper")}


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@functools.cache
def _scalar_functions() -> frozenset[str]:
    rows = duckdb.execute("SELECT function_name FROM duckdb_functions() WHERE function_type IN ('scalar', 'macro')")
    return frozenset(r[0].lower() for r in rows.fetchall())


def _nodes(tree):
    """Every node of a DuckDB parse tree (json_serialize_sql), depth first."""
    if isinstance(tree, dict):
        yield tree
    for v in tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else ():
        yield from _nodes(v)


def _compile(text: str, columns: set[str] | None = None) -> str:
    """`text` as SQL over the `rows` view, after checking that it names only `columns` (None: the known
    schema), row functions and real levels. Level names become ENUM values: DuckDB compares an ENUM with
    a plain string as text ('excellent' < 'good'), with one of its own values by rank."""
    try:
        duckdb.SQLExpression(text)  # exactly one expression: no `;`, FROM, ... tricks
    except duckdb.Error as e:
        raise FilterError(f"cannot parse filter expression {text!r}: {' '.join(str(e).split())}; "
                          "write one SQL condition, e.g. \"instruct_reward > -12\"") from None
    select = ("SELECT " + text).encode()  # the tree's query_location counts bytes of this
    tree = json.loads(duckdb.execute("SELECT json_serialize_sql(?)", [select.decode()]).fetchone()[0])
    nodes, splices = list(_nodes(tree["statements"][0]["node"]["select_list"])), []
    where = f"in filter expression {text!r}"
    params = {n["column_names"][0].lower() for lam in nodes if lam.get("class") == "LAMBDA"  # `lambda m: ...`
              for n in _nodes(lam["lhs"]) if n.get("class") == "COLUMN_REF"}
    for node in nodes:
        kind = node.get("class")
        if kind == "SUBQUERY":
            raise FilterError(f"subquery {where}: a condition looks at one row")
        if kind == "FUNCTION" and not node["is_operator"] and node["function_name"].lower() not in _scalar_functions():
            raise FilterError(f"unknown or non-row function {node['function_name']!r} {where} "
                              "(scalar DuckDB functions only: no aggregates, windows or table functions)")
        sides = ([node[k] for k in _COMPARE[kind]] if kind in _COMPARE else node["children"]
                 if node.get("type") in ("COMPARE_IN", "COMPARE_NOT_IN") else [])
        level = next((n["column_names"][0].lower() for n in sides if n.get("class") == "COLUMN_REF"
                      and len(n["column_names"]) == 1 and n["column_names"][0].lower() in LEVELS), None)
        for n in sides if level else []:
            if n.get("class") == "CONSTANT" and n["literal"]["kind"] == "STRING":
                word = n["literal"]["text"].strip().lower()  # as the data: lower(trim(x))
                if word not in LEVELS[level]:
                    raise FilterError(f"{n['literal']['text']!r} is not a level of {level} {where} "
                                      f"(levels, lowest first: {', '.join(LEVELS[level])})")
                start = n["query_location"]
                splices.append((start, start + n["query_location_length"], f"{_sql_str(word)}::{level}_level"))
    refs = {n["column_names"][0] for n in nodes if n.get("class") == "COLUMN_REF"}
    _check_columns({r for r in refs if r.lower() not in params}, columns, where)
    for start, end, new in sorted(splices, reverse=True):
        select = select[:start] + new.encode() + select[end:]
    return "(" + select.decode()[len("SELECT "):] + ")"


def _check_columns(names: set[str], columns: set[str] | None, where: str) -> None:
    """Fail early, naming the column, rather than dropping every row for a typo."""
    def usable(cols: set[str]) -> set[str]:  # the columns, and the derived ones whose inputs are there
        return cols | {d for d, (_, needs) in DERIVED.items() if set(needs) <= cols}
    known = usable(set(SCHEMA))
    have = known if columns is None else usable({c.lower() for c in columns})
    for name in sorted(n for n in names if n.lower() not in have):
        if (low := name.lower()) in known:
            lacking = " and ".join(repr(c) for c in (DERIVED[low][1] if low in DERIVED else [low]) if c not in have)
            raise FilterError(f"the input has no column {lacking} (needed by {name!r} {where}); run the tagger "
                              "that writes it first, or choose a preset without it")
        raise FilterError(f"unknown column {name!r} {where}; columns: {', '.join(sorted(have))}")


_CUTS = (None, "longest", "longest-balanced", "categories", "random", "first")


def validate(preset: str | Preset | None, expression: str | None = None, size: int | None = None,
             columns=None) -> Preset:
    """The Preset to run, after every check that needs no data; `columns`: the input's (default: the known
    schema, core/schema.py COLUMNS + DERIVED)."""
    p = resolve(preset, expression, size)
    if size is not None and int(size) < 1:
        raise FilterError(f"filter size {size} keeps nothing; give a positive number of rows, or none for the preset's")
    if p.cut not in _CUTS:
        raise FilterError(f"unknown cut {p.cut!r} in preset {p.name!r}; choose from {', '.join(map(str, _CUTS))}")
    _conditions(p, columns)
    return p


def _conditions(p: Preset, columns=None) -> list[str]:
    """Each condition as SQL, after checking it and the columns the cut reads against `columns`."""
    columns = None if columns is None else set(columns)
    conds = [_compile(text, columns) for text in p.conditions]
    cut_needs = {"longest": {"response_length"}, "longest-balanced": {"response_length", "difficulty"},
                 "categories": {"task_category"}}
    _check_columns(cut_needs.get(p.cut, set()), columns, f"in the {p.cut} cut of preset {p.name!r}")
    return conds


# -- the engine -------------------------------------------------------------------------------
def _open(p: Preset, files: list[str] | None = None, table: pa.Table | None = None):
    """A connection whose view `rows` is `files` or `table` (with `__pos`, the row's place in the input), levels
    as ENUMs (anything else NULL) and DERIVED added; and the conditions' SQL, bound before a row is read."""
    con, source = duckdb.connect(), "src"
    if files:  # a row's place in the dataset: its shard's offset + its row number in the shard
        offsets = np.cumsum([0] + [pq.ParquetFile(f).metadata.num_rows for f in files[:-1]])
        table = pa.table({"f": files, "o": offsets})
        source = (f"(SELECT p.* EXCLUDE (filename, file_row_number), f.o + p.file_row_number AS __pos "
                  f"FROM read_parquet([{', '.join(map(_sql_str, files))}], filename=true, file_row_number=true, "
                  "union_by_name=true) p JOIN src f ON p.filename = f.f)")
    con.register("src", table)
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * EXCLUDE (__pos) FROM {source}").fetchall()]
    for col, levels in LEVELS.items():
        con.execute(f"CREATE TYPE {col}_level AS ENUM ({', '.join(map(_sql_str, levels))})")
    norm = [f"TRY_CAST(lower(trim(CAST({c} AS VARCHAR))) AS {c}_level) AS {c}" for c in LEVELS if c in columns]
    derived = [f", {sql} AS {name}" for name, (sql, needs) in DERIVED.items()
               if name not in columns and set(needs) <= set(columns)]
    replace = f" REPLACE ({', '.join(norm)})" if norm else ""
    con.execute(f"CREATE TEMP VIEW rows AS SELECT *{replace}{''.join(derived)} FROM {source}")
    conds = _conditions(p, columns)
    for text, sql in zip((" ".join(t.split()) for t in p.conditions), conds):
        try:
            kind = con.execute(f"DESCRIBE SELECT {sql} FROM rows WHERE {sql}").fetchall()[0][1]
        except duckdb.Error as e:
            raise FilterError(f"filter expression {text!r} does not fit this input: {str(e).splitlines()[0]}") from None
        if kind not in ("BOOLEAN", '"NULL"'):
            raise FilterError(f"filter expression {text!r} gives {kind}, not true/false; compare it, e.g. x > 0")
    return con, conds


def _select(con, p: Preset, conds: list[str], seed: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Positions of the kept rows (ascending) and the funnel, from one scan of `rows` that stores the first
    condition each row fails and its cut key; the cut then reads those few bytes a row. No `con`: no rows."""
    steps, n = ["input", *(" ".join(t.split()) for t in p.conditions)], p.size or 0
    if p.cut:
        steps.append({"random": f"random {n:,} (seed {seed})", "first": f"first {n:,}",
                      "longest": f"{n:,} longest responses",
                      "longest-balanced": f"{n:,} longest: {n // 2:,} very easy/easy + {n - n // 2:,} medium or harder",
                      "categories": f"{n:,} shared evenly over task categories (seed {seed})"}[p.cut])
    if con is None:
        return np.zeros(0, np.int64), [(s, 0) for s in steps]
    # The first condition a row fails (an unknown result fails, as in WHERE), or len(conds) if none.
    whens = " ".join(f"WHEN NOT coalesce({sql}, false) THEN {i}" for i, sql in enumerate(conds))
    keys = {"longest": ", response_length",
            "longest-balanced": ", response_length, difficulty <= 'easy'::difficulty_level AS easy",
            "categories": ", task_category"}.get(p.cut, "")
    con.execute(f"CREATE TEMP TABLE steps AS SELECT __pos, {f'CASE {whens} ELSE {len(conds)} END' if conds else 0} "
                f"AS __k{keys} FROM rows")
    hist = dict(con.execute("SELECT __k, count(*) FROM steps GROUP BY __k").fetchall())
    left = [sum(v for k, v in hist.items() if k >= i) for i in range(len(conds) + 1)]  # the input, then each step
    survivors = f"FROM steps WHERE __k = {len(conds)}"
    order = "ORDER BY response_length DESC, __pos"  # ties go to the earlier row
    query = {"first": f"SELECT __pos {survivors} ORDER BY __pos LIMIT {n}",
             "longest": f"SELECT __pos {survivors} {order} LIMIT {n}",
             # No top-up from the other group when one is short: the mix is the point of Filter 6.
             "longest-balanced": f"SELECT __pos FROM (SELECT __pos, easy, row_number() OVER (PARTITION BY easy "
                                 f"{order}) AS r {survivors} AND easy IS NOT NULL) "
                                 f"WHERE r <= CASE WHEN easy THEN {n // 2} ELSE {n - n // 2} END"}
    if p.cut == "categories":
        groups = dict(con.execute(f"SELECT task_category, count(*) {survivors} GROUP BY task_category").fetchall())
        quota = fair_shares(groups, n)
        con.register("quota", pa.table({"cat": pa.array(list(quota), pa.string()), "q": list(quota.values())}))
        query["categories"] = (
            f"SELECT __pos FROM (SELECT __pos, task_category, row_number() OVER (PARTITION BY task_category "
            f"ORDER BY hash(__pos, {int(seed)}), __pos) AS r {survivors}) s JOIN quota ON s.task_category IS NOT "
            "DISTINCT FROM quota.cat WHERE r <= q")
    kept = np.sort(con.execute(query.get(p.cut, f"SELECT __pos {survivors}")).fetchnumpy()["__pos"].astype(np.int64))
    if p.cut == "random":  # random.sample draws list positions: the same rows as sampling the survivors' list
        kept = np.sort(kept[random.Random(seed).sample(range(len(kept)), min(n, len(kept)))])
    return kept, list(zip(steps, left + ([len(kept)] if p.cut else [])))


def fair_shares(counts: dict, n: int) -> dict:
    """`n` rows shared over groups of `counts` rows as evenly as they allow (max-min fair): a group smaller than its
    share keeps all its rows and leaves the rest to the others. Deterministic: smallest groups first, then by name."""
    quota, left = {}, n
    order = sorted(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
    for i, (group, rows) in enumerate(order):
        quota[group] = min(rows, left // (len(order) - i))
        left -= quota[group]
    return quota


def _emptied_by(p: Preset, funnel, where: str) -> str | None:
    """The step that removed the last rows (and a WARNING saying so), or None when rows are left."""
    if not funnel or funnel[-1][1] > 0:
        return None
    step = next((s for (_, before), (s, n) in itertools.pairwise(funnel) if before > 0 and n == 0), "input (no rows)")
    log.warning("filter %s kept 0 of %d rows of %s: %r removed the last ones", p.name, funnel[0][1], where, step)
    return step


def apply(records: list[dict], preset: str | Preset, size: int | None = None, seed: int = 0,
          expression: str | None = None) -> tuple[list[dict], list[tuple[str, int]]]:
    """Filter `records` in memory (tests, small sets): the kept records, in input order, and the funnel,
    (step, rows left) from ("input", n) through each condition to the cut."""
    p = validate(preset, expression, size)
    if not records:
        return [], _select(None, p, [], seed)[1]
    table = pa.Table.from_pylist(records)
    con, conds = _open(p, table=table.append_column("__pos", pa.array(np.arange(len(records), dtype=np.int64))))
    with con:
        kept, funnel = _select(con, p, conds, seed)
    _emptied_by(p, funnel, f"{len(records)} records")
    return [records[i] for i in kept], funnel


def row_fates(in_dir, conditions: list[str], cut: str | None, size: int | None, seed: int = 0) -> dict[int, str]:
    """Why each row of `in_dir` is in or out of a filter run of these conditions and cut (a filtered manifest's
    config): {row position: "kept" | the first condition it fails | "cut: <the cut's step>"}. One DuckDB scan, as
    the filter itself."""
    p = Preset("fates", tuple(conditions), size=size, cut=cut)
    src = store.DatasetDir(in_dir)
    files = [str(src.shard_path(k)) for k in src.shards() if src.shard_path(k).exists()]
    if not files:
        return {}
    con, conds = _open(p, files=files)
    with con:
        kept, funnel = _select(con, p, conds, seed)
        steps = con.execute("SELECT __pos, __k FROM steps").fetchnumpy()
    names = [" ".join(t.split()) for t in p.conditions]
    kept_set = set(kept.tolist())
    cut_step = funnel[-1][0] if p.cut else ""
    return {int(pos): "kept" if int(pos) in kept_set else names[k] if k < len(names) else f"cut: {cut_step}"
            for pos, k in zip(steps["__pos"], steps["__k"])}


def format_funnel(funnel: list[tuple[str, int]]) -> str:
    """The funnel as aligned text lines: step, rows left, share of the input."""
    w = max((len(s) for s, _ in funnel), default=0)
    return "\n".join(f"{s:<{w}}  {n:>9,}  {100 * n / (funnel[0][1] or 1):6.2f}%" for s, n in funnel)


# -- the stage --------------------------------------------------------------------------------
SHARD_ROWS = 100_000
_BATCH_ROWS = 32_768  # rows pyarrow decodes at a time to copy the kept ones: ~100 MB at ~3 KB a row


def _copy_rows(ds: store.DatasetDir, files: list[str], keep: np.ndarray) -> None:
    """Write the rows at positions `keep` (ascending) of `files` as shards of SHARD_ROWS, in input order,
    with their own columns and types (Arrow all the way); only row groups that hold a kept row are read."""
    table, shard, start = None, 0, 0
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.metadata.num_row_groups):
            end = start + pf.metadata.row_group(g).num_rows
            if np.searchsorted(keep, start) < np.searchsorted(keep, end):
                for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=[g]):
                    lo, hi = np.searchsorted(keep, [start, start + batch.num_rows])
                    part = pa.Table.from_batches([batch.take(pa.array(keep[lo:hi] - start))])
                    # promote: a column null in one shard, typed in another
                    table = part if table is None else pa.concat_tables([table, part], promote_options="default")
                    start += batch.num_rows
                    while table.num_rows >= SHARD_ROWS:
                        ds.write_shard(shard, table.slice(0, SHARD_ROWS), {"kept": SHARD_ROWS})
                        table, shard = table.slice(SHARD_ROWS), shard + 1
            start = end
    if shard == 0 or table.num_rows:  # an empty result still gets its shard 0 (a marker): the directory is complete
        ds.write_shard(shard, [] if table is None else table, {"kept": 0 if table is None else table.num_rows})


def filter_dataset(in_dir, out_dir, preset: str | None, size: int | None = None, expression: str | None = None,
                   seed: int = 0) -> dict:
    """Write `out_dir` with the rows of `in_dir` (a tagged dataset directory) that `preset` (and `expression`)
    keep; a complete run of the same config is left as it is. Returns {"input", "kept", "funnel",
    "emptied_by"}: emptied_by names the step that removed the last rows when none are kept (a WARNING too)."""
    p = validate(preset, expression, size)
    src = store.DatasetDir(in_dir)
    src_manifest = src.require_complete()
    files = [str(src.shard_path(k)) for k in src.shards() if src.shard_path(k).exists()]
    con, conds = _open(p, files=files) if files else (None, [])
    config = {"preset": p.name, "conditions": list(p.conditions), "cut": p.cut, "size": p.size,
              "seed": seed, "input_id": src.identity()}
    ds = store.DatasetDir(out_dir)
    m = ds.begin("filter", config, input=str(in_dir), input_stage=src_manifest.get("stage"), source=p.source)
    if m.get("status") == "complete":
        counts, funnel = m["counts"], m.get("funnel") or []
    else:
        keep, funnel = _select(con, p, conds, seed)
        _copy_rows(ds, files, keep)
        counts = {"input": funnel[0][1], "kept": len(keep)}
        ds.finish(counts, funnel=funnel, preset=p.name, conditions=list(p.conditions))
        log.info("filter %s: kept %d of %d rows -> %s\n%s", p.name, len(keep), funnel[0][1], out_dir,
                 format_funnel(funnel))
    funnel = [list(step) for step in funnel]  # as the manifest stores it
    return {**counts, "funnel": funnel, "emptied_by": _emptied_by(p, funnel, str(in_dir))}
