"""Filter presets on hand-made tag tables, with values exactly at each threshold of paper Table 5."""
import pytest

from synth import filters, store
from synth.filters import FilterError, apply, filter_dataset


def row(i: int, length: int | None = None, **tags) -> dict:
    """A record that passes every preset's conditions unless a tag is overridden."""
    r = {"id": i, "instruction": f"Question {i}?", "response": "x" * (length if length is not None else 10 + i),
         "input_quality": "excellent", "difficulty": "hard", "instruct_reward": 5.0, "reward_difference": 1.0,
         "llama_guard_2": "safe", "language": "EN", "min_neighbor_distance": 0.5,
         "min_similar_conversation_id": None, "repeat_count": 0}
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
    records = [row(i, difficulty="easy" if i % 2 else "hard") for i in range(40)]
    for name in filters.PRESETS:
        kept, funnel = apply(records, name, size=10)
        assert funnel[0] == ("input", 40)
        assert funnel[-1][1] == len(kept)
        assert len(kept) == (40 if name == "pro-filter-5" else 10), name  # Filter 5 has no length cut


def test_longest_cut_is_last_and_keeps_the_longest():
    # The two longest responses fail a condition: the cut must pick from what passed.
    records = [row(0, length=1000, instruct_reward=-20.0), row(1, length=900, min_neighbor_distance=0.0),
               row(2, length=50), row(3, length=300), row(4, length=200), row(5, length=100)]
    kept, funnel = apply(records, "pro-300k-filtered", size=2)
    assert [r["id"] for r in kept] == [3, 4]  # the two longest that passed, in input order
    assert funnel == [("input", 6), ("input_quality >= average", 6), ("instruct_reward > -12", 5),
                      ("min_neighbor_distance > 0", 4), ("2 longest responses", 2)]


def test_multi_turn_length_counts_every_assistant_turn():
    mt = row(0, length=10)
    mt["messages"] += [{"role": "user", "content": "more?"}, {"role": "assistant", "content": "y" * 100}]
    single = row(1, length=100)
    kept, _ = apply([mt, single], "pro-filter-3", size=1)
    assert [r["id"] for r in kept] == [0]  # 10 + 100 > 100
    assert filters.response_length(mt) == 110


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
    assert funnel == [("input", 10), ("input_quality >= good", 8), ("difficulty >= medium", 7),
                      ("reward_difference > 0", 5), ("min_neighbor_distance > 0", 4), ("3 longest responses", 3)]
    assert [r["id"] for r in kept] == [1, 2, 3]
    assert "input_quality >= good" in filters.format_funnel(funnel)


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
    ids = lambda expr, **kw: [r["id"] for r in apply(records, expr, **kw)[0]]  # noqa: E731
    assert ids("instruct_reward > -5 and language == 'EN'") == [0, 4]
    assert ids("not instruct_reward > -5") == [1]  # None stays unknown under `not`: dropped
    assert ids("instruct_reward is None") == [3]
    assert ids("instruct_reward > 0 or language == 'ZH'") == [2, 4]
    assert ids("difficulty <= 'very easy'") == [4]
    assert ids("difficulty in [easy, very_easy]") == [4]
    assert ids("dedup") == [0, 1, 2, 3]
    assert ids("-5 < instruct_reward <= -1") == [0, 2]
    assert ids("len(instruction) > 0", size=2) == [3, 4]  # with a size: the longest cut
    # A preset plus an extra condition, applied before the cut.
    kept, funnel = apply(records, "pro-filter-3", expression="language == 'EN'", size=10)
    assert [r["id"] for r in kept] == [0, 1, 4] and funnel[-2] == ("language == 'EN'", 3)


@pytest.mark.parametrize("expr,needle", [
    ("instruct_rewrd > -5", "instruct_rewrd"),
    ("language == EN", "'EN'"),
    ("input_quality >= great", "great"),
    ("__import__('os').system('true')", "unsupported"),
    ("instruct_reward >", "cannot parse"),
])
def test_bad_expressions_name_the_problem(expr, needle):
    with pytest.raises(FilterError, match="unknown column|not a level|unsupported|cannot parse") as e:
        apply([row(0)], expr)
    assert needle in str(e.value)


def test_missing_tag_column_says_to_tag_first():
    r = row(0)
    del r["reward_difference"]
    with pytest.raises(FilterError, match="no record has column 'reward_difference'"):
        apply([r], "air-300k-filtered")
    with pytest.raises(FilterError, match="unknown filter preset 'pro-filter-9'"):
        apply([r], "pro-filter-9")


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
