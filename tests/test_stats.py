"""Plots are real PNG files; missing tags plot as "untagged"."""
from synth import stats

PNG = b"\x89PNG\r\n\x1a\n"


def records():
    out = []
    for i in range(30):
        out.append({
            "id": i, "instruction": "q" * (5 + i), "response": "a" * (20 * i + 1),
            "task_category": [None, "Math", "Coding & Debugging", "Planning"][i % 4],
            "difficulty": [None, "easy", "medium", "very hard"][i % 4],
            "input_quality": ["good", "average", None][i % 3],
            "language": ["EN", "ZH", None][i % 3],
            "llama_guard_2": "unsafe\nS2" if i == 3 else ("safe" if i % 5 else None),
            "instruct_reward": None if i % 7 == 0 else -15 + i,
            "min_neighbor_distance": None if i % 6 == 0 else 0.01 * (i % 4),
        })
    return out


def test_plot_all_writes_pngs(tmp_path):
    funnel = [("input", 30), ("instruct_reward > -12", 25), ("10 longest responses", 10)]
    paths = stats.plot_all(records(), tmp_path / "plots", funnel=funnel)
    assert len(paths) == len(stats.PLOTS) + 1
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG and len(data) > 5_000, p


def test_untagged_counts_and_empty_input(tmp_path):
    counts = dict(stats.category_counts(records(), "difficulty", ("very easy", "easy", "medium")))
    assert counts["untagged"] == 8 and counts["easy"] == 8
    assert dict(stats.category_counts(records(), "llama_guard_2"))["unsafe S2"] == 1
    # A set with no tags at all still plots (e.g. before tagging).
    bare = [{"id": 0, "instruction": "hi", "response": "hello"}]
    for p in stats.plot_all(bare, tmp_path):
        assert p.read_bytes()[:8] == PNG


def test_wandb_tables():
    import wandb

    t = stats.wandb_tables(records(), [("input", 30), ("kept", 10)])
    assert all(isinstance(v, wandb.Table) for v in t.values())
    assert t["filter/funnel"].data == [["input", 30], ["kept", 10]]
    assert sum(row[2] for row in t["tags/instruct_reward"].data) == 25
