"""Multi-turn, tagging, filtering and export on a real tiny run (embedded SmolLM2 and MiniLM)."""
import json
import shutil
from pathlib import Path

import datasets
import pytest
from conftest import TINY, chain_argv, kill_when, seeded  # the `chain` fixture is in conftest

from core.store import DatasetDir
from synth.__main__ import main


@pytest.mark.slow
def test_multiturn_alternates_and_ends_on_assistant(chain):
    convs = DatasetDir(chain / "multiturn").records()
    m = json.loads((chain / "multiturn" / "manifest.json").read_text())
    assert m["status"] == "complete" and m["mt_append_template"] == "<|im_start|>user\n"
    assert len(convs) == m["counts"]["conversations"] >= 8
    for c in convs:
        roles = [msg["role"] for msg in c["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert all(msg["content"].strip() for msg in c["messages"])
        assert c["messages"][2]["content"] == c["instruction_2"] and "\n" not in c["instruction_2"]
        assert c["messages"][0]["content"] == c["instruction"]


@pytest.mark.slow
def test_tagged_records_carry_every_field(chain):
    m = json.loads((chain / "tagged" / "manifest.json").read_text())
    tagged = DatasetDir(chain / "tagged").records()
    n = len(DatasetDir(chain / "multiturn").records())
    assert len(tagged) == m["counts"]["records"] == n  # tags sit on the multi-turn set
    fields = ["task_category", "other_task_category", "difficulty", "input_quality", "instruct_reward",
              "reward_model", "reward_difference", "llama_guard_2", "language", "min_neighbor_distance",
              "repeat_count", "min_similar_conversation_id"]
    assert sum(r["language"] == "EN" for r in tagged) >= 0.8 * n  # an emoji-only instruction may read as MS
    for r in tagged:
        assert set(fields) <= set(r)
        assert r["language"] is None or (len(r["language"]) == 2 and r["language"].isupper())  # ISO 639-1
        words = r["instruction"].split()
        if len(words) >= 8 and all(w.isascii() for w in words):  # a plain English sentence (SmolLM2's usual)
            assert r["language"] == "EN", r["instruction"]
        assert r["min_neighbor_distance"] >= 0 and r["repeat_count"] >= 0
        assert "stand-in" in r["reward_model"]
    cov = m["counts"]["coverage"]
    assert cov["min_neighbor_distance"] == cov["instruct_reward"] == cov["language"] == n
    assert all("stand_in" in info for name, info in m["taggers_info"].items() if name != "language")
    assert {Path(p).name for p in m["plots"]} >= {"task_category.png", "difficulty.png", "instruct_reward.png"}
    assert all(Path(p).stat().st_size > 1000 for p in m["plots"])


@pytest.mark.slow
def test_filter_and_export(chain):
    fm = json.loads((chain / "filtered" / "manifest.json").read_text())
    assert fm["preset"] == "raw-300k" and fm["funnel"][0][0] == "input"
    n = fm["counts"]["kept"]
    ds = datasets.load_dataset("parquet", data_dir=str(chain / "export" / "data"), split="train")
    assert ds.num_rows == n and ds.column_names[0] == "messages"
    lines = (chain / "export" / "sharegpt.jsonl").read_text().splitlines()
    assert len(lines) == n
    conv = json.loads(lines[0])["conversations"]
    assert [t["from"] for t in conv] == ["human", "gpt", "human", "gpt"]
    card = (chain / "export" / "README.md").read_text()
    assert f"{n} conversations" in card and "Stand-ins" in card and "raw-300k" in card


@pytest.mark.slow
def test_paper_preset_funnel_on_tiny_tags(chain, tmp_path, capsys):
    """The paper's Air preset runs on the tiny tags and prints its funnel, even when it keeps nothing."""
    shutil.copytree(chain / "tagged", tmp_path / "tagged")
    assert main(["filter", "--config", TINY, "--output_dir", str(tmp_path), "--filter_preset", "air-300k-filtered",
                 "--report_to", "none"]) == 0
    captured = capsys.readouterr()
    assert "input_quality >= 'good'" in captured.out and "reward_difference > 0" in captured.out
    funnel = json.loads((tmp_path / "filtered" / "manifest.json").read_text())["funnel"]
    if funnel[-1][1] == 0:  # SmolLM2's tags rarely pass the paper's bar: the run says so loudly
        assert "WARNING: the filter kept 0" in captured.err


@pytest.mark.slow
def test_killed_tagging_resumes(chain, tmp_path):
    """Kill the tag stage mid-way; the restarted run skips what is done and equals the uninterrupted one."""
    out = seeded(chain, tmp_path / "t", stages=("instructions", "responses", "multiturn"))
    args = ["--stages", "tag", "--taggers", "difficulty", "language", "min_neighbor_distance"]
    shard = out / "tagged" / "parts" / "difficulty" / "data" / "part-00001.parquet"
    assert kill_when("synth", chain_argv(out, *args), shard), "the tag stage ended before its second shard"
    assert json.loads((out / "tagged" / "manifest.json").read_text())["status"] == "running"
    assert main(chain_argv(out, *args)) == 0
    for name in ("difficulty", "language", "min_neighbor_distance"):
        got = DatasetDir(out / "tagged" / "parts" / name).records()
        want = DatasetDir(chain / "tagged" / "parts" / name).records()
        assert got == want, name
    tagged = DatasetDir(out / "tagged").records()
    assert len({r["id"] for r in tagged}) == len(tagged) == len(DatasetDir(out / "multiturn").records())


@pytest.mark.slow
def test_wandb_runs_hold_tag_tables_and_funnel(chain):
    runs = sorted((chain / "wandb").glob("offline-run-*"))
    assert len(runs) == 4  # multiturn, tag, filter, export
    tables = [p.name for r in runs for p in r.rglob("*.table.json")]
    assert any(n.startswith("task_category") for n in tables), tables
    assert any(n.startswith("funnel") for n in tables), tables
