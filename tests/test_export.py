"""Export of a small hand-made tagged dataset: Parquet for TRL, ShareGPT lines, the card."""
import json
import os

import datasets
import pytest

from core import store
from synth.export import export, license_for, licenses
from synth.filters import filter_dataset

TEMPLATE = "<|im_start|>user\n"
STAND_IN = "HuggingFaceTB/SmolLM2-135M-Instruct judges in place of Llama-3-8B-Instruct"


def records():
    out = []
    for i in range(6):
        ins, res = f"How do I do thing {i}?", "Like this. " * (i + 1)
        out.append({
            "id": i, "instruction": ins, "response": res, "pre_query_template": TEMPLATE,
            "messages": [{"role": "user", "content": ins}, {"role": "assistant", "content": res}],
            "gen_input_configs": {"temperature": 1.0, "top_p": 1.0 if i % 2 else 0.995,
                                  "input_generator": "HuggingFaceTB/SmolLM2-135M-Instruct", "engine": "hf"},
            "gen_response_configs": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4096,
                                     "output_generator": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "task_category": ["Coding & Debugging", "Math", None][i % 3], "other_task_category": ["Reasoning"],
            "difficulty": ["easy", "medium", "hard"][i % 3], "intent": "to learn", "knowledge": "basics",
            "input_quality": "good", "quality_explanation": "clear", "instruct_reward": float(i - 2),
            "reward_model": "stand-in-rm", "llama_guard_2": "safe" if i else "unsafe\nS2", "language": "EN",
            "min_neighbor_distance": 0.1 * i, "repeat_count": 0, "min_similar_conversation_id": None,
            "raw_instruction": ins,  # a working column: not exported
        })
    # A two-turn conversation with a system prompt: ShareGPT and the lengths must follow every turn.
    mt = out[5]
    mt["messages"] = [{"role": "system", "content": "Be brief."}] + mt["messages"] + [
        {"role": "user", "content": "And then?"}, {"role": "assistant", "content": "Then stop."}]
    return out


@pytest.fixture
def filtered(tmp_path):
    tagged = store.DatasetDir(tmp_path / "tagged")
    tagged.begin("tag", {"taggers": ["judge", "reward"]},
                 taggers={"judge": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "stand_in": STAND_IN},
                          "reward": {"model": "stand-in-rm"}})
    tagged.write_shard(0, records(), {"kept": 6})
    tagged.finish({"rows": 6})
    filter_dataset(tmp_path / "tagged", tmp_path / "filtered", "pro-filter-3", size=4)
    return tmp_path / "filtered"


def test_export_parquet_sharegpt_and_card(filtered, tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # a push attempted here would fail the test
    out = tmp_path / "release"
    info = export(filtered, out, "magpie-tiny-pro-filter-3", {"stand_in": "tiny reward model for FsfairX"})
    assert info["records"] == 4 and info["pushed_to"] is None
    m = store.DatasetDir(out).manifest()  # a stage like the others: a manifest keyed by its input
    assert m["stage"] == "export" and m["status"] == "complete" and m["counts"]["records"] == 4
    assert m["config"]["input_id"] == store.DatasetDir(filtered).identity()

    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert len(ds) == 4 and ds.column_names[0] == "messages"
    assert "raw_instruction" not in ds.column_names and "instruct_reward" in ds.column_names
    for ex in ds:  # TRL's conversational format: a list of {role, content}
        roles = [m["role"] for m in ex["messages"]]
        assert set(roles) <= {"system", "user", "assistant"} and roles[-1] == "assistant"
    assert sorted(ds["id"]) == [2, 3, 4, 5]  # reward > -12 and distance > 0 drop id 0, then the 4 longest

    lines = [json.loads(x) for x in (out / "sharegpt.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:
        turns = [c["from"] for c in line["conversations"] if c["from"] != "system"]
        assert turns == ["human", "gpt"] * (len(turns) // 2) and line["task_category"] in (
            "Coding & Debugging", "Math", None)
        assert {"id", "instruct_reward", "llama_guard_2"} <= set(line)
    mt = next(x for x in lines if x["id"] == 5)
    assert mt["conversations"][0] == {"from": "system", "value": "Be brief."} and len(mt["conversations"]) == 5

    card = (out / "README.md").read_text()
    front = card.split("---\n")[1]
    # Two licences, each stated: SmolLM2's for its outputs, and the data's (the Magpie releases' by default).
    assert "license:\n- apache-2.0\n- cc-by-nc-4.0\n" in front and "path: data/part-*.parquet" in front
    assert "**The generator model's**: Apache-2.0 (SmolLM2); Hub id `apache-2.0`; source: the table of known" in card
    assert "**The data's**: CC BY-NC 4.0; Hub id `cc-by-nc-4.0`; source: the data licence of the Magpie-Align" in card
    assert "4 conversations" in card and "| rows | 4 |" in card
    assert repr(TEMPLATE) in card
    assert STAND_IN in card and "tiny reward model for FsfairX" in card
    assert "pro-filter-3" in card and "instruct_reward > -12" in card and "4 longest responses" in card
    assert "| Coding & Debugging |" in card and "| untagged |" in card and "| medium |" in card


def test_licenses_follow_the_generator():
    assert license_for("meta-llama/Meta-Llama-3-8B-Instruct")[0] == "llama3"
    assert license_for("meta-llama/Llama-3.1-8B-Instruct")[0] == "llama3.1"
    assert license_for("meta-llama/Llama-3.3-70B-Instruct")[0] == "llama3.3"
    assert license_for("HuggingFaceTB/SmolLM2-1.7B-Instruct")[0] == "apache-2.0"
    assert license_for("Qwen/Qwen2.5-7B-Instruct")[0] == "apache-2.0"
    assert license_for("Qwen/Qwen2.5-72B-Instruct") == ("other", "Qwen License Agreement")  # a size of its own
    assert license_for("google/gemma-2-9b-it")[0] == "gemma"
    assert license_for("microsoft/Phi-3-mini-4k-instruct")[0] == "mit"
    unknown = "unknown: set model_license (the licence of some/unknown, on its model card)"
    assert license_for("some/unknown") == ("other", unknown)


def test_the_card_states_both_licences_and_takes_them_from_the_config(filtered, tmp_path):
    """Magpie issue #47: which licence covers the data? The card says the generator's and the data's apart, each
    with its source; the config keys replace either."""
    lic = licenses("some/unknown")
    assert lic["model"] == {"id": "other", "name": license_for("some/unknown")[1], "source": "not known"}
    assert lic["data"]["id"] == "cc-by-nc-4.0" and lic["ids"] == ["other", "cc-by-nc-4.0"]
    out = tmp_path / "release"
    export(filtered, out, "x", {}, model_license="llama3.1", data_license="Apache-2.0")
    card = (out / "README.md").read_text()
    assert "license:\n- llama3.1\n- apache-2.0\n" in card.split("---\n")[1]
    assert "**The generator model's**: llama3.1; Hub id `llama3.1`; source: config model_license" in card
    assert "**The data's**: Apache-2.0; Hub id `apache-2.0`; source: config data_license" in card
    # A licence is part of what the export is: changed, the finished export is not silently reused.
    with pytest.raises(store.RunMismatch, match="data_license"):
        export(filtered, out, "x", {}, model_license="llama3.1", data_license="MIT")


def test_export_refuses_incomplete_or_empty(tmp_path):
    with pytest.raises(store.IncompleteInput):
        export(tmp_path / "nothing", tmp_path / "out", "x", {})
    empty = store.DatasetDir(tmp_path / "empty")
    empty.begin("filter", {})
    empty.write_shard(0, [], {"kept": 0})
    empty.finish({"kept": 0})
    with pytest.raises(ValueError, match="no rows"):
        export(tmp_path / "empty", tmp_path / "out", "x", {})


def test_export_again_is_reused_and_a_changed_input_is_noticed(filtered, tmp_path):
    out = tmp_path / "release"
    export(filtered, out, "x", {})
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    again = export(filtered, out, "x", {})
    assert again["records"] == 4
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p in written} == written  # nothing rewritten
    # The input rewritten under the same config (here: one row fewer) is another input, not a reuse.
    ds = store.DatasetDir(filtered)
    rows = ds.records()[:-1]
    ds.write_shard(0, rows, {"kept": len(rows)})
    ds.finish({"kept": len(rows)})
    with pytest.raises(store.RunMismatch, match="input_id"):
        export(filtered, out, "x", {})


def test_a_damaged_release_file_is_found_and_the_release_redone(filtered, tmp_path, caplog):
    """Every file the export keeps is checked on reuse as its shards are (size + sha256 recorded at finish): a
    truncated sharegpt.jsonl, accepted before as "12 records" and left truncated, is written again whole."""
    out = tmp_path / "release"
    export(filtered, out, "x", {})
    files = store.DatasetDir(out).manifest()["files"]
    assert {"sharegpt.jsonl", "README.md", "data/part-00000.parquet"} <= set(files)
    whole = {name: (out / name).read_bytes() for name in ("sharegpt.jsonl", "README.md")}
    (out / "sharegpt.jsonl").write_bytes(whole["sharegpt.jsonl"][:50])  # a copy or a disk cut short
    assert export(filtered, out, "x", {})["records"] == 4
    assert (out / "sharegpt.jsonl").read_bytes() == whole["sharegpt.jsonl"]
    assert str(out / "sharegpt.jsonl") in caplog.text
    (out / "README.md").write_text(whole["README.md"].decode().replace("4 conversations", "5 conversations"))
    export(filtered, out, "x", {})  # same size, another sha256
    assert (out / "README.md").read_bytes() == whole["README.md"]
