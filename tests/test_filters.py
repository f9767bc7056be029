"""Filter presets on hand-made tag tables, with values exactly at each threshold of paper Table 5; the stage
on real Parquet shards."""
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import store
from synth import filters
from synth.filters import FilterError, apply, filter_dataset, validate
from synth.stats import response_lengths


def row(i: int, length: int | None = None, **tags) -> dict:
    """A record that passes every preset's conditions unless a tag is overridden."""
    r = {"id": i, "instruction": f"Question {i}?", "response": "x" * (length if length is not None else 10 + i),
         "input_quality": "excellent", "difficulty": "hard", "instruct_reward": 5.0, "reward_difference": 1.0,
         "llama_guard_2": "safe", "language": "EN", "min_neighbor_distance": 0.5,
         "min_similar_conversation_id": None, "repeat_count": 0, "task_category": "Math"}
    r["messages"] = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]
    r.update(tags)
    return r


# (preset, tag, value, passes): each threshold of Table 5 from both sides, and None.
EDGES = [
    ("air-300k-filtered", "input_quality", "good", True),
    ("air-300k-filtered", "input_quality", "average", False),
    ("air-300k-filtered", "input_quality", "Good", True),  # judges vary the case
    ("air-300k-filtered", "input_quality", None, False),
    ("air-300k-filtered", "difficulty", "medium", True),
    ("air-300k-filtered", "difficulty", "easy", False),
    ("air-300k-filtered", "difficulty", None, False),
    ("air-300k-filtered", "reward_difference", 0.0, False),
    ("air-300k-filtered", "reward_difference", 1e-6, True),
    ("air-300k-filtered", "reward_difference", None, False),
    ("air-300k-filtered", "min_neighbor_distance", 0.0, False),
    ("air-300k-filtered", "min_neighbor_distance", 1e-6, True),
    ("air-300k-filtered", "min_neighbor_distance", None, False),
    ("pro-300k-filtered", "input_quality", "average", True),
    ("pro-300k-filtered", "input_quality", "poor", False),
    ("pro-300k-filtered", "instruct_reward", -12.0, False),
    ("pro-300k-filtered", "instruct_reward", -11.99, True),
    ("pro-300k-filtered", "instruct_reward", None, False),
    ("pro-300k-filtered", "difficulty", "very easy", True),  # no difficulty condition in Filter 1
    ("pro-300k-filtered", "min_neighbor_distance", 0.0, False),
    ("pro-filter-1", "instruct_reward", -12.0, False),
    ("pro-filter-2", "input_quality", "good", True),
    ("pro-filter-2", "input_quality", "average", False),
    ("pro-filter-2", "difficulty", "easy", True),
    ("pro-filter-2", "difficulty", "very easy", False),
    ("pro-filter-2", "instruct_reward", -12.0, False),
    ("pro-filter-3", "instruct_reward", -12.0, False),
    ("pro-filter-3", "instruct_reward", -11.5, True),
    ("pro-filter-3", "input_quality", None, True),  # Filter 3 does not look at quality
    ("pro-filter-3", "min_neighbor_distance", 0.0, False),
    ("pro-filter-4", "reward_difference", 0.0, False),
    ("pro-filter-4", "difficulty", "easy", True),
    ("pro-filter-4", "input_quality", "average", False),
    ("pro-filter-5", "input_quality", "good", True),
    ("pro-filter-5", "difficulty", "very easy", False),
    ("pro-filter-5", "instruct_reward", -12.0, False),
    ("pro-filter-6", "instruct_reward", -12.0, False),
    ("pro-filter-6", "difficulty", None, False),
    ("pro-filter-6", "input_quality", "very poor", True),
    ("mt-300k", "difficulty", "medium", True),
    ("mt-300k", "difficulty", "easy", False),
    ("mt-300k", "input_quality", "good", True),
    ("mt-300k", "input_quality", "average", False),
    ("pro-300k-filtered-card", "instruct_reward", -10.0, True),  # the card says >= -10
    ("pro-300k-filtered-card", "instruct_reward", -10.01, False),
    ("pro-300k-filtered-card", "instruction", "Rewrite this:", False),
    ("pro-300k-filtered-card", "min_similar_conversation_id", 0, True),  # its own id: the keeper
    ("pro-300k-filtered-card", "min_similar_conversation_id", 7, False),
    ("pro-300k-filtered-card", "min_neighbor_distance", 0.0, True),  # dedup, not the distance
    ("pro-300k-filtered-repo", "instruct_reward", -10.0, False),  # the notebook says > -10
    ("pro-300k-filtered-repo", "input_quality", "average", False),
    ("raw-300k", "input_quality", None, True),
    ("raw-300k-first", "min_neighbor_distance", 0.0, True),
]


@pytest.mark.parametrize("preset,tag,value,passes", EDGES)
def test_threshold_edges(preset, tag, value, passes):
    kept, funnel = apply([row(0, **{tag: value})], preset, size=10)
    assert len(kept) == int(passes), filters.format_funnel(funnel)
    if not passes:  # the funnel names the condition that dropped it
        first_zero = next(step for step, n in funnel if n == 0)
        assert tag.split("_")[0] in first_zero or (tag == "min_similar_conversation_id" and first_zero == "dedup")


def test_every_preset_runs_and_keeps_its_size_cap():
    # (reasoning-closed reads a thinking model's columns: every row here closed its thinking)
    records = [row(i, difficulty="easy" if i % 2 else "hard", reasoning="r", reasoning_closed=True) for i in range(40)]
    for name in filters.PRESETS:
        kept, funnel = apply(records, name, size=10)
        assert funnel[0] == ("input", 40)
        assert funnel[-1][1] == len(kept)
        # Filter 5 and reasoning-closed have no length cut
        assert len(kept) == (40 if name in ("pro-filter-5", "reasoning-closed") else 10), name


def test_categories_cut_shares_the_size_evenly_over_task_categories():
    """The DPO presets' cut: a category with fewer rows than its share keeps them all and leaves the rest to the
    others; within a category the pick is seeded."""
    from collections import Counter

    cats = ["Information seeking"] * 20 + ["Math"] * 3 + ["Coding & Debugging"] * 10
    records = [row(i, task_category=c) for i, c in enumerate(cats)]
    kept, funnel = apply(records, "dpo-balanced", size=12, seed=0)
    assert Counter(r["task_category"] for r in kept) == {"Math": 3, "Coding & Debugging": 4, "Information seeking": 5}
    assert funnel == [("input", 33), ("12 shared evenly over task categories (seed 0)", 12)]
    assert [r["id"] for r in kept] == sorted(r["id"] for r in kept)  # input order
    assert apply(records, "dpo-balanced", size=12, seed=0)[0] == kept
    assert apply(records, "dpo-balanced", size=12, seed=1)[0] != kept
    assert filters.fair_shares({"a": 100, "b": 100, "c": 100}, 10) == {"a": 3, "b": 3, "c": 4}
    # dpo-100k: the quality and difficulty bar and the reward floor first
    kept, funnel = apply([row(0, difficulty="easy"), row(1, input_quality="average"), row(2, instruct_reward=-6.0),
                          row(3)], "dpo-100k")
    assert [r["id"] for r in kept] == [3] and [n for _, n in funnel] == [4, 3, 2, 1, 1]


def test_longest_cut_is_last_and_keeps_the_longest():
    # The two longest responses fail a condition: the cut must pick from what passed.
    records = [row(0, length=1000, instruct_reward=-20.0), row(1, length=900, min_neighbor_distance=0.0),
               row(2, length=50), row(3, length=300), row(4, length=200), row(5, length=100)]
    kept, funnel = apply(records, "pro-300k-filtered", size=2)
    assert [r["id"] for r in kept] == [3, 4]  # the two longest that passed, in input order
    assert funnel == [("input", 6), ("input_quality >= 'average'", 6), ("instruct_reward > -12", 5),
                      ("min_neighbor_distance > 0", 4), ("2 longest responses", 2)]


def test_multi_turn_length_counts_every_assistant_turn():
    mt = row(0, length=10)
    mt["messages"] += [{"role": "user", "content": "more?"}, {"role": "assistant", "content": "y" * 100}]
    single = row(1, length=100)
    kept, _ = apply([mt, single], "pro-filter-3", size=1)
    assert [r["id"] for r in kept] == [0]  # 10 + 100 > 100
    # The filter's SQL measures what stats.response_lengths (the report's and the card's) does.
    assert list(response_lengths(pa.Table.from_pylist([mt, single]))) == [110, 100]
    assert apply([mt, single], "response_length = 110")[0] == [mt]
    assert [r["id"] for r in apply([mt, single], "turns = 2")[0]] == [0]


def test_ties_go_to_the_earlier_row():
    records = [row(i, length=50, difficulty=["easy", "hard"][i % 2]) for i in range(8)]
    assert [r["id"] for r in apply(records, "pro-filter-3", size=3)[0]] == [0, 1, 2]
    assert [r["id"] for r in apply(records[::-1], "pro-filter-3", size=3)[0]] == [7, 6, 5]
    assert [r["id"] for r in apply(records, "pro-filter-6", size=4)[0]] == [0, 1, 2, 3]


def test_size_larger_than_rows_keeps_all_and_paper_size_is_default():
    records = [row(i) for i in range(5)]
    kept, funnel = apply(records, "air-300k-filtered")
    assert len(kept) == 5 and funnel[-1] == ("300,000 longest responses", 5)
    assert filters.PRESETS["pro-filter-6"].size == 200_000


def test_funnel_counts_are_exact():
    records = ([row(i) for i in range(4)] + [row(4, input_quality="average"), row(5, input_quality="poor")]
               + [row(6, difficulty="easy"), row(7, reward_difference=0.0), row(8, reward_difference=-1.0)]
               + [row(9, min_neighbor_distance=0.0)])
    kept, funnel = apply(records, "air-300k-filtered", size=3)
    assert funnel == [("input", 10), ("input_quality >= 'good'", 8), ("difficulty >= 'medium'", 7),
                      ("reward_difference > 0", 5), ("min_neighbor_distance > 0", 4), ("3 longest responses", 3)]
    assert [r["id"] for r in kept] == [1, 2, 3]
    assert "input_quality >= 'good'" in filters.format_funnel(funnel)


def test_filter_6_takes_half_easy_half_harder():
    easy = [row(i, difficulty=d) for i, d in enumerate(["very easy", "easy", "easy", "very easy"])]
    hard = [row(10 + i, difficulty=d) for i, d in enumerate(["medium", "hard", "very hard", "medium"])]
    kept, funnel = apply(easy + hard, "pro-filter-6", size=4)
    # Response length grows with id: the two longest of each group.
    assert [r["id"] for r in kept] == [2, 3, 12, 13]
    assert funnel[-1][1] == 4
    # One group short: no top-up from the other.
    kept, _ = apply(easy[:1] + hard, "pro-filter-6", size=4)
    assert [r["id"] for r in kept] == [0, 12, 13]


def test_raw_presets():
    records = [row(i) for i in range(40)]
    a, funnel = apply(records, "raw-300k", size=10, seed=3)
    b, _ = apply(records, "raw-300k", size=10, seed=3)
    c, _ = apply(records, "raw-300k", size=10, seed=4)
    assert [r["id"] for r in a] == [r["id"] for r in b] != [r["id"] for r in c]
    assert [r["id"] for r in a] == sorted(r["id"] for r in a)  # kept rows stay in dataset order
    assert funnel == [("input", 40), ("random 10 (seed 3)", 10)]
    first, _ = apply(records, "raw-300k-first", size=10)
    assert [r["id"] for r in first] == list(range(10))


def test_expressions():
    records = [row(0, instruct_reward=-3.0, language="EN"), row(1, instruct_reward=-7.0, language="EN"),
               row(2, instruct_reward=-1.0, language="ZH"), row(3, instruct_reward=None, language="EN"),
               row(4, difficulty="very easy", min_similar_conversation_id=0)]
    ids = lambda expr, **kw: [r["id"] for r in apply(records, expr, **kw)[0]]
    assert ids("instruct_reward > -5 AND language = 'EN'") == [0, 4]
    assert ids("NOT instruct_reward > -5") == [1]  # NULL stays unknown under NOT: dropped
    assert ids("instruct_reward IS NULL") == [3]
    assert ids("instruct_reward > 0 OR language = 'ZH'") == [2, 4]
    assert ids("difficulty <= 'very easy'") == [4]
    assert ids("difficulty IN ('easy', 'Very Easy')") == [4]
    assert ids("difficulty BETWEEN 'very easy' AND 'easy'") == [4]
    assert ids("dedup") == [0, 1, 2, 3]
    assert ids("-5 < instruct_reward AND instruct_reward <= -1") == [0, 2]
    assert ids("length(instruction) > 0", size=2) == [3, 4]  # with a size: the longest cut
    # A preset plus an extra condition, applied before the cut.
    kept, funnel = apply(records, "pro-filter-3", expression="language = 'EN'", size=10)
    assert [r["id"] for r in kept] == [0, 1, 4] and funnel[-2] == ("language = 'EN'", 3)


def test_a_value_outside_the_levels_counts_as_missing():
    records = [row(0, input_quality="great"), row(1, input_quality=" GOOD "), row(2, input_quality="excellent")]
    assert [r["id"] for r in apply(records, "input_quality >= 'good'")[0]] == [1, 2]  # by rank, not 'e' < 'g'
    assert [r["id"] for r in apply(records, "input_quality IS NULL")[0]] == [0]


@pytest.mark.parametrize("expr,needle", [
    ("instruct_rewrd > -5", "unknown column 'instruct_rewrd'"),
    ("language = EN", "unknown column 'EN'"),
    ("input_quality >= 'great'", "'great' is not a level of input_quality"),
    ("__import__('os').system('true')", "function"),
    ("instruct_reward >", "cannot parse"),
    ("instruct_reward > -1; DROP TABLE rows", "cannot parse"),
    ("(SELECT max(instruct_reward) FROM rows) > 0", "subquery"),
    ("count(*) > 0", "function"),
    ("instruct_reward", "not true/false"),
    ("language > 5", "does not fit this input"),
])
def test_bad_expressions_name_the_problem(expr, needle):
    with pytest.raises(FilterError) as e:
        apply([row(0)], expr)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_tag_column_says_to_tag_first():
    r = row(0)
    del r["reward_difference"]
    with pytest.raises(FilterError, match="the input has no column 'reward_difference'"):
        apply([r], "air-300k-filtered")
    with pytest.raises(FilterError, match="unknown filter preset 'pro-filter-9'"):
        apply([r], "pro-filter-9")


def test_validate_checks_everything_without_the_data():
    assert validate("air-300k-filtered", None, None).conditions == filters.PRESETS["air-300k-filtered"].conditions
    for name in filters.PRESETS:  # every preset holds against the known schema
        validate(name, None, 1000)
    with pytest.raises(FilterError, match="unknown filter preset 'pro-filter-9'"):
        validate("pro-filter-9", None, None)
    with pytest.raises(FilterError, match=r"cannot parse filter expression 'instruct_reward >'") as e:
        validate("pro-300k-filtered", "instruct_reward >", None)
    assert "\n" not in str(e.value)
    with pytest.raises(FilterError, match="unknown column 'instruct_rewrd'.*columns: .*instruct_reward"):
        validate(None, "instruct_rewrd > 0", None)  # the known schema: core/schema.py + derived
    with pytest.raises(FilterError, match="size 0"):
        validate("pro-300k-filtered", None, 0)
    # Against the input's schema: a known tag it lacks, a name nobody knows (listing what there is).
    with pytest.raises(FilterError, match="the input has no column 'reward_difference'"):
        validate("air-300k-filtered", None, None, columns=["id", "instruction", "input_quality", "difficulty"])
    with pytest.raises(FilterError, match="the input has no column 'min_similar_conversation_id'"):
        validate("pro-300k-filtered-card", None, None, columns=["id", "instruction", "instruct_reward",
                                                               "input_quality", "messages", "response"])
    with pytest.raises(FilterError, match=r"unknown column 'score'.*columns: id, instruction, instruction_length"):
        validate(None, "score > 1", None, columns=["id", "instruction"])
    validate(None, "score > 1", None, columns=["id", "score"])  # a column of the input, unknown to the schema


def test_a_filter_that_keeps_nothing_says_which_condition_emptied_it(tmp_path, caplog):
    records = [row(i, input_quality="good", instruct_reward=-20.0 + i) for i in range(4)]
    src = _tagged_dir(tmp_path / "tagged", records)
    with caplog.at_level(logging.WARNING, logger="synth.filters"):
        counts = filter_dataset(src, tmp_path / "out", "pro-filter-2", size=2)
    assert (counts["input"], counts["kept"], counts["emptied_by"]) == (4, 0, "instruct_reward > -12")
    assert counts["funnel"][-1] == ["2 longest responses", 0]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "instruct_reward > -12" in warned[0].getMessage()
    assert store.DatasetDir(tmp_path / "out").require_complete()["counts"]["kept"] == 0  # complete, empty
    assert filter_dataset(src, tmp_path / "out", "pro-filter-2", size=2)["emptied_by"] == "instruct_reward > -12"
    kept = filter_dataset(src, tmp_path / "some", "raw-300k-first", size=2)
    assert kept["emptied_by"] is None and kept["kept"] == 2


def _tagged_dir(path, records):
    ds = store.DatasetDir(path)
    ds.begin("tag", {"taggers": ["judge"]})
    ds.write_shard(0, records, {"kept": len(records)})
    ds.finish({"rows": len(records)})
    return path


def test_filter_stage_writes_manifest_and_skips_when_complete(tmp_path):
    src = _tagged_dir(tmp_path / "tagged", [row(i) for i in range(8)] + [row(8, instruct_reward=-12.0)])
    out = tmp_path / "filtered"
    counts = filter_dataset(src, out, "pro-300k-filtered", size=5)
    assert {k: counts[k] for k in ("input", "kept")} == {"input": 9, "kept": 5}
    assert counts["funnel"][0] == ["input", 9]
    ds = store.DatasetDir(out)
    m = ds.require_complete()
    assert m["preset"] == "pro-300k-filtered" and m["config"]["size"] == 5
    assert m["funnel"][-1] == ["5 longest responses", 5] and m["funnel"][2] == ["instruct_reward > -12", 8]
    assert sorted(r["id"] for r in ds.records()) == [3, 4, 5, 6, 7]
    finished = m["finished"]
    assert filter_dataset(src, out, "pro-300k-filtered", size=5) == counts
    assert ds.manifest()["finished"] == finished  # skipped, not redone
    with pytest.raises(store.RunMismatch):
        filter_dataset(src, out, "pro-300k-filtered", size=6)
    empty = filter_dataset(src, tmp_path / "none", None, expression="instruct_reward > 100")
    assert (empty["input"], empty["kept"]) == (9, 0) and store.DatasetDir(tmp_path / "none").records() == []


def test_filter_stage_validates_before_writing(tmp_path):
    src = _tagged_dir(tmp_path / "tagged", [row(i) for i in range(3)])
    for bad in [{"preset": "pro-filter-9"}, {"preset": None, "expression": "instruct_rewrd > 0"},
                {"preset": None, "expression": "language > 5"}, {"preset": "pro-filter-3", "size": 0}]:
        with pytest.raises(FilterError):
            filter_dataset(src, tmp_path / "out", **bad)
        assert not (tmp_path / "out").exists()


def test_filter_stage_streams_shards_keeping_order_and_columns(tmp_path, monkeypatch):
    """Many shards and row groups in, small shards out: the same rows as `apply`, in input order, with
    exactly the input's columns, and never the whole dataset as Python objects."""
    records = [row(i, length=(i * 37) % 50, difficulty=["easy", "hard", "medium"][i % 3], extra=f"e{i}")
               for i in range(60)]
    records[5]["input_quality"] = None
    ds = store.DatasetDir(tmp_path / "tagged")
    ds.begin("tag", {"taggers": ["judge"]})
    for k in range(4):  # shards of 15 rows; write_shard's files hold one row group: rewrite with several
        ds.write_shard(k, records[15 * k:15 * (k + 1)])
        pq.write_table(pq.read_table(ds.shard_path(k)), ds.shard_path(k), row_group_size=4)
    ds.write_shard(4, [])  # a unit group that kept nothing
    ds.finish({"rows": 60})
    input_columns = pq.read_schema(ds.shard_path(0)).names
    monkeypatch.setattr(store.DatasetDir, "records", lambda self: pytest.fail("loaded the whole dataset"))
    monkeypatch.setattr(filters, "SHARD_ROWS", 7)
    monkeypatch.setattr(filters, "_BATCH_ROWS", 3)
    for preset, size in [("air-300k-filtered", 11), ("pro-filter-6", 10), ("raw-300k", 25), ("pro-filter-5", None)]:
        out = tmp_path / preset
        counts = filter_dataset(ds.path, out, preset, size=size, seed=1)
        want, funnel = apply(records, preset, size=size, seed=1)
        assert counts["funnel"] == [list(s) for s in funnel] and counts["kept"] == len(want) > 0
        files = sorted((out / "data").glob("*.parquet"))
        assert [pq.read_metadata(f).num_rows for f in files][:-1] == [7] * (len(files) - 1)
        got = pa.concat_tables([pq.read_table(f) for f in files])
        assert got.column_names == input_columns  # no __pos, filename, response_length, ...
        assert got.to_pylist() == want  # the same rows, in input order
