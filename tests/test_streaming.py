"""The stages after tagging stream (issue 11): the tag join, the stats and the export hold a batch of rows, not the
set, so a 1M-row tagged set fits in memory (benchmarks/scale_data.py measures that scale).

The memory test runs each step (the tag join, the stats' reading of a directory, the export) in a fresh process on N and 4N rows of long texts, with small batches, and compares
the step's peak allocations: the Python heap (tracemalloc) plus Arrow's memory pool (max_memory). Those are exact;
the process's RSS also carries what glibc and mimalloc keep of freed memory, which varies by ~30 MB from run to run
and would hide a slow leak. A step that holds every record as a dict grows by more than the data's size (measured:
+80 to +160 MB here with DatasetDir.batches made to load records() first); a streaming one by nothing."""
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core import store

ROWS = 500  # N; the second run has 4N rows
BATCH = 25  # rows per batch in the measured steps (20 batches at N)
TEXT = 24_000  # characters of a response; with the instruction and `messages`, ~50 KB of text a row
STEPS = ("join", "stats", "export")
TAGGERS = {"judge": ("task_category", "difficulty", "input_quality"), "reward": ("instruct_reward",),
           "guard": ("llama_guard_2",), "language": ("language",),
           "neighbors": ("min_neighbor_distance", "repeat_count", "min_similar_conversation_id")}
LABELS = {"task_category": ["Math", "Planning", None], "difficulty": ["easy", "hard"], "input_quality": ["good", "poor"],
          "llama_guard_2": ["safe", "unsafe\nS2"], "language": ["EN", "ZH"]}


def build(root: Path, n: int, text_chars: int = TEXT, input_rows: int = 250, part_rows: int = 64) -> None:
    """An input (the responses stage's columns, shards of input_rows) and one tagger part per tagger (`id` + its
    fields in input order, shards of part_rows; the neighbours in one shard), as the tag stage leaves them
    before its join in `root/tagged`."""
    rng = np.random.default_rng(n)
    pool = "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz"), 200_000))

    def texts(k: int, length: int) -> list[str]:
        return [pool[s:s + length] for s in rng.integers(0, len(pool) - length, k)]

    src = store.DatasetDir(root / "input")
    src.begin("responses", {"rows": n})
    for k, lo in enumerate(range(0, n, input_rows)):
        m = min(input_rows, n - lo)
        ins, res = texts(m, 1_000), texts(m, text_chars)
        src.write_shard(k, [{"id": lo + i, "instruction": ins[i], "response": res[i],
                             "messages": [{"role": "user", "content": ins[i]}, {"role": "assistant", "content": res[i]}],
                             "gen_input_configs": {"temperature": 1.0, "top_p": 1.0}} for i in range(m)])
    src.finish({"records": n})
    store.DatasetDir(root / "tagged").begin("tagged", {"rows": n})  # the tag stage's output holds its parts
    for name, fields in TAGGERS.items():
        part = store.DatasetDir(root / "tagged" / "parts" / name)
        part.begin(f"tag:{name}", {"rows": n})
        size = n if name == "neighbors" else part_rows
        for k, lo in enumerate(range(0, n, size)):
            ids = np.arange(lo, min(lo + size, n))
            cols = {"id": ids}
            for f in fields:
                cols[f] = (rng.choice(LABELS[f], len(ids)) if f in LABELS
                           else pa.nulls(len(ids), pa.int64()) if f == "min_similar_conversation_id"
                           else rng.normal(size=len(ids)))
            part.write_shard(k, pa.table(cols))
        part.finish({"parse_failures": 0}, fields=list(fields))


def _parts(tagged: Path) -> dict:
    return {name: store.DatasetDir(tagged / "parts" / name).manifest() for name in TAGGERS}


def measure(root: Path, step: str) -> float:
    """Run one step in this (fresh) process with batches of BATCH rows: its peak allocations in MB."""
    from synth import export, stats
    from synth.tag import join_parts, summarize

    if step == "stats":
        import wandb  # noqa: F401  (its import is not the step's)
    stats.BATCH_ROWS, export._BATCH_ROWS, export.SHARD_ROWS = BATCH, BATCH, 2 * BATCH
    tagged = store.DatasetDir(root / "tagged")
    tracemalloc.start()
    if step == "join":
        counts = summarize(join_parts(root / "input", tagged.path, _parts(tagged.path), BATCH), _parts(tagged.path))
        tagged.finish(counts)
    elif step == "stats":  # what plot_all(dir) draws from (drawing it is fixed work), and the W&B tables
        stats.Profile.of(tagged)
        stats.wandb_tables(tagged)
    else:
        export.export(tagged.path, root / "release", "streaming-test", {})
    return (tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory()) / 2**20


def test_join_stats_and_export_memory_does_not_grow_with_rows(tmp_path):
    peaks = {}
    for n in (ROWS, 4 * ROWS):
        root = tmp_path / str(n)
        build(root, n)
        peaks[n] = {}
        for s in STEPS:
            run = subprocess.run([sys.executable, __file__, str(root), s], capture_output=True, text=True, check=False)
            assert run.returncode == 0, run.stderr[-3000:]
            peaks[n][s] = json.loads(run.stdout.strip().splitlines()[-1])
        assert store.DatasetDir(root / "release").num_rows() == n
    grown_mb = 3 * ROWS * (TEXT + 1_000) * 2 / 2**20  # the text 3N more rows add (each twice: `messages`)
    for s in STEPS:
        growth = peaks[4 * ROWS][s] - peaks[ROWS][s]
        assert growth < grown_mb / 4, (f"{s}: peak {peaks[ROWS][s]:.0f} MB at {ROWS} rows, {peaks[4 * ROWS][s]:.0f} "
                                       f"MB at {4 * ROWS}: +{growth:.0f} MB for {grown_mb:.0f} MB more text")


def test_join_walks_the_parts_in_step_and_refuses_one_out_of_step(tmp_path):
    from synth.tag import join_parts, summarize

    build(tmp_path, 23, text_chars=30, input_rows=7, part_rows=4)  # input, part and output shards all differ
    parts = _parts(tmp_path / "tagged")
    profile = join_parts(tmp_path / "input", tmp_path / "tagged", parts, 5)
    out, src = store.DatasetDir(tmp_path / "tagged"), store.DatasetDir(tmp_path / "input").records()
    assert out.row_counts() == [5, 5, 5, 5, 3]
    want = [dict(r) for r in src]
    for name in TAGGERS:
        for r, row in zip(want, store.DatasetDir(tmp_path / "tagged" / "parts" / name).records()):
            r.update({f: row[f] for f in parts[name]["fields"]})
    assert out.records() == want
    counts = summarize(profile, parts)
    assert counts["records"] == 23 and counts["coverage"]["min_similar_conversation_id"] == 0
    assert counts["distributions"]["language"] == {k: sum(r["language"] == k for r in want) for k in ("EN", "ZH")}

    lang = store.DatasetDir(tmp_path / "tagged" / "parts" / "language")
    rows = lang.records()
    lang.write_shard(2, [*rows[8:9], {**rows[9], "id": 99}, *rows[10:12]])  # a part out of step with its input
    with pytest.raises(ValueError, match=r"parts/language does not follow its input: it has id 99 at row 9"):
        join_parts(tmp_path / "input", tmp_path / "tagged", parts, 5)
    lang.shard_path(5).unlink()  # rows 20-22 gone
    lang.write_shard(2, rows[8:12])
    with pytest.raises(ValueError, match="ends at row 20"):
        join_parts(tmp_path / "input", tmp_path / "tagged", parts, 5)


def test_batches_cross_shards_in_exact_sizes(tmp_path):
    ds = store.DatasetDir(tmp_path)
    ds.begin("x", {})
    ds.write_shard(0, [{"id": 0, "a": None}, {"id": 1, "a": None}])  # `a` all null here: a null column
    ds.write_shard(1, [])  # an empty marker
    ds.write_shard(2, [{"id": i, "a": f"x{i}", "b": i} for i in range(2, 7)])  # `b` only here
    assert [t.num_rows for t in ds.batches(3)] == [3, 3, 1]
    assert [r for t in ds.batches(3) for r in t.to_pylist()] == [{**r, "b": r.get("b")} for r in ds.records()]
    assert [t.column_names for t in ds.batches(4, ["b", "id", "missing"])] == [["b", "id"]] * 2
    assert ds.columns() == ["id", "a", "b"]


def test_stats_of_a_directory_are_those_of_its_records(tmp_path):
    from synth import stats

    build(tmp_path, 40, text_chars=50, input_rows=9, part_rows=8)
    from synth.tag import join_parts

    join_parts(tmp_path / "input", tmp_path / "tagged", _parts(tmp_path / "tagged"), 6)
    ds = store.DatasetDir(tmp_path / "tagged")
    a, b = stats.Profile.of(ds), stats.Profile.of(ds.records())
    assert a.rows == b.rows == 40 and a.counts == b.counts and a.turns == b.turns == {1: 40}
    for f in stats.NUMERIC + stats.LENGTHS:
        assert a.values(f).tolist() == b.values(f).tolist() and a.missing(f) == b.missing(f)
    assert a.values("response_length").tolist() == [len(r["response"]) for r in ds.records()]


if __name__ == "__main__":  # the measuring process of the memory test
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2])))
