"""`export_format: magpie`: our exports in the released Magpie sets' columns and types, read back by `datasets` and
concatenated with hand-written rows in the released layout (tests/fixtures/released, typed by the cards'
`dataset_info`); train.data reads either layout into TRL's formats."""
from pathlib import Path

import datasets
import pytest

from core import store
from synth import released
from synth.export import export
from synth.preferences import export_preferences, pair, pair_scores
from train.data import load_preference_dataset, load_sft_dataset

RELEASED = Path(__file__).parent / "fixtures" / "released"
TEMPLATE = "<|im_start|>user\n"
GEN, JUDGE = "HuggingFaceTB/SmolLM2-135M-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct"


def conversation(i: int, turns: int) -> list[dict]:
    out = []
    for t in range(1, turns + 1):
        out += [{"role": "user", "content": f"Question {i}.{t}: how do I do thing {i}?"},
                {"role": "assistant", "content": "Like this. " * (i + t)}]
    return out


def tagged_record(i: int, turns: int) -> dict:
    msgs = conversation(i, turns)
    return {
        "id": i, "instruction": msgs[0]["content"], "response": msgs[1]["content"], "messages": msgs,
        "pre_query_template": TEMPLATE,
        "gen_input_configs": {"temperature": 1.0, "top_p": 0.995, "max_tokens": 2048, "input_generator": GEN,
                              "engine": "hf", "seed": 1234 + i, "stop": ["\n"], "sanitized": False},
        "gen_response_configs": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4096, "output_generator": GEN},
        "task_category": None if i == 4 else "Math", "other_task_category": ["Reasoning"],
        "difficulty": "easy", "intent": "to learn", "knowledge": "basics", "input_quality": "good",
        "quality_explanation": "clear", "instruct_reward": float(i), "reward_model": "stand-in-rm",
        "llama_guard_2": "safe", "language": "EN",
        # 0, 1 and 2 repeat each other (0 first), 3 and 4 stand alone: the neighbour tagger's three fields
        "min_neighbor_distance": 0.01 if i < 3 else 0.5, "repeat_count": 2 if i < 3 else 0,
        "min_similar_conversation_id": 0 if i < 3 else i,
        "raw_instruction": msgs[0]["content"], f"instruction_{turns}": "a working column: not exported",
    }


def make_run(root: Path, turns: int = 1, seed: int = 0) -> Path:
    """instructions/ (and multiturn/) then tagged/, as the stages record them: the manifests the export reads."""
    ins = store.DatasetDir(root / "instructions")
    ins.begin("instructions", {"seed": seed, "n": 200}, model=GEN, engine="hf",
              template={"pre_query_template": TEMPLATE})
    ins.write_shard(0, [{"id": i, "instruction": conversation(i, 1)[0]["content"]} for i in range(5)], {"kept": 5})
    ins.finish({"kept": 5})
    up = ins
    if turns > 1:
        up = store.DatasetDir(root / "multiturn")
        up.begin("multiturn", {"turns": turns, "input_id": ins.identity()}, input=str(ins.path))
        up.write_shard(0, [{"id": i} for i in range(5)], {"kept": 5})
        up.finish({"kept": 5})
    tagged = store.DatasetDir(root / "tagged")
    judge = {"judge_model": JUDGE, "judge_engine": "vllm"}
    tagged.begin("tagged", {"taggers": {"task_category": judge, "difficulty": judge, "input_quality": judge,
                                        "instruct_reward": {"reward_model": "stand-in-rm"}},
                            "input_id": up.identity()}, input=str(up.path))
    tagged.write_shard(0, [tagged_record(i, turns) for i in range(5)], {"kept": 5})
    tagged.finish({"rows": 5})
    return tagged.path


def load(out: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")


def theirs(layout: str) -> datasets.Dataset:
    """A fixture read as the Hub reads a set: its card's `dataset_info` gives the features."""
    return datasets.load_dataset(str(RELEASED / layout), split="train")


def assert_same_schema(ours: datasets.Dataset, ref: datasets.Dataset) -> None:
    assert ours.column_names == ref.column_names
    assert ours.features.type == ref.features.type  # Arrow types, struct fields in order: no cast needed


def test_sft_export_in_the_released_layout_concatenates_with_theirs(tmp_path):
    tagged = make_run(tmp_path / "run")
    info = export(tagged, tmp_path / "release", "tiny", {}, export_format="magpie")
    assert info["records"] == 5
    ours, ref = load(tmp_path / "release"), theirs("magpie-sft")
    assert_same_schema(ours, ref)
    both = datasets.concatenate_datasets([ref, ours])
    assert len(both) == len(ref) + 5 and both.features == ref.features

    rows = {r["instruction"]: r for r in ours}
    key = store.DatasetDir(tmp_path / "run/instructions").manifest()["config_hash"]
    uuid = [released.uuid_of(key, i) for i in range(5)]
    r0, r1, r3, r4 = (rows[conversation(i, 1)[0]["content"]] for i in (0, 1, 3, 4))
    assert r0["uuid"] == uuid[0] and len(set(ours["uuid"])) == 5
    # gen_dis.py: the first of a cluster (here 0, also for itself); null without near-repeats
    assert r0["min_similar_uuid"] == r1["min_similar_uuid"] == uuid[0] and r3["min_similar_uuid"] is None
    assert r0["model"] == GEN and r0["gen_input_configs"] == {
        "temperature": 1.0, "top_p": 0.995, "input_generator": GEN, "seed": None, "extract_input": TEMPLATE}
    assert r0["conversations"] == [{"from": "human", "value": r0["instruction"]}, {"from": "gpt", "value": r0["response"]}]
    assert (r0["instruction_length"], r0["response_length"]) == (len(r0["instruction"]), len(r0["response"]))
    # unitag.py: the judge where it gave the tag, null where it did not
    assert (r0["task_category_generator"], r0["difficulty_generator"], r0["quality_generator"]) == (JUDGE,) * 3
    assert r4["task_category"] is None and r4["task_category_generator"] is None and r4["quality_generator"] == JUDGE
    assert r0["other_task_category"] == ["Reasoning"] and r0["instruct_reward"] == 0.0 and r0["repeat_count"] == 2

    # The same records exported again: the same uuids; another instruction run: others (ids restart at 0 in each)
    export(tagged, tmp_path / "again", "other-name", {}, export_format="magpie")
    assert load(tmp_path / "again")["uuid"] == ours["uuid"]
    export(make_run(tmp_path / "run2", seed=1), tmp_path / "release2", "tiny", {}, export_format="magpie")
    assert not set(load(tmp_path / "release2")["uuid"]) & set(ours["uuid"])

    card = (tmp_path / "release/README.md").read_text()
    assert "columns and types of the released Magpie-Align sets" in card and "`messages` is TRL's" not in card
    assert store.DatasetDir(tmp_path / "release").manifest()["counts"]["columns"] == ref.column_names


def test_multi_turn_export_takes_the_released_mt_layout(tmp_path):
    tagged = make_run(tmp_path / "run", turns=2)
    export(tagged, tmp_path / "release", "tiny-mt", {}, export_format="magpie")
    ours, ref = load(tmp_path / "release"), theirs("magpie-mt")
    assert_same_schema(ours, ref)
    assert len(datasets.concatenate_datasets([ours, ref])) == 7
    r = ours[0]
    msgs = conversation(0, 2)
    assert (r["instruction"], r["response"], r["instruction_2"], r["response_2"]) == tuple(m["content"] for m in msgs)
    assert [c["from"] for c in r["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert r["gen_input_configs"]["pre_query_template"] == TEMPLATE  # the Llama-3.1 MT sets' name for it


def test_native_export_is_unchanged_by_default(tmp_path):
    """The default stays ours, and its config is the one an export made before export_format existed had."""
    tagged = make_run(tmp_path / "run")
    export(tagged, tmp_path / "release", "tiny", {})
    assert load(tmp_path / "release").column_names[0] == "messages"
    config = store.DatasetDir(tmp_path / "release").manifest()["config"]
    assert store.config_hash(config) == store.config_hash({k: config[k] for k in ("name", "card_info", "input_id")})
    with pytest.raises(ValueError, match="export_format must be one of native, magpie"):
        export(tagged, tmp_path / "other", "tiny", {}, export_format="sharegpt")


# -- preference data ----------------------------------------------------------------------------------------
SCORES = {0: [0.2, 0.1, None, 0.4, 0.3], 1: [0.5, 0.5, 0.5, 0.5, 0.5], 2: [0.9, 0.05, 0.3, 0.2, 0.1]}


def scored_dir(root: Path) -> Path:
    """preferences/scored/ as score_shard leaves it (pairs made by the real `pair`), with its lineage."""
    tagged = store.DatasetDir(make_run(root))
    samples = store.DatasetDir(root / "preferences/samples")
    sampling = {"temperature": 0.8, "top_p": 1.0, "max_tokens": 4096, "n": 5, "stop": [], "stop_token_ids": [],
                "seed": 0, "repetition_penalty": 1.0, "logprobs": None}
    samples.begin("preferences", {"pref_k": 5, "input_id": tagged.identity()}, model=GEN, engine="hf",
                  sampling=sampling, input=str(tagged.path))
    samples.write_shard(0, [{"id": i} for i in SCORES], {"kept": 3})
    samples.finish({"instructions": 3})
    rows = []
    for i, sc in SCORES.items():
        r = {k: v for k, v in tagged_record(i, 1).items() if k in (
            "id", "instruction", "task_category", "difficulty", "input_quality", "language", "instruct_reward",
            "intent", "knowledge", "quality_explanation", "gen_input_configs")}
        responses = [f"Answer {j} to {i}." if s is not None else "" for j, s in enumerate(sc)]
        p = pair(responses, sc)
        c, rj = p["chosen_index"], p["rejected_index"]
        rows.append({**r, "responses": responses, "finish_reasons": ["stop"] * 5, "scores": sc, **p,
                     "reward_model": "stand-in-rm", "chosen": responses[c], "rejected": responses[rj],
                     "score_chosen": sc[c], "score_rejected": sc[rj], "margin": sc[c] - sc[rj]})
    scored = store.DatasetDir(root / "preferences/scored")
    scored.begin("preference_pairs", {"input_id": samples.identity()}, input=str(samples.path))
    scored.write_shard(0, rows, {"kept": 3})
    scored.finish({"kept": 3, "scored": 14, "unscorable": 0, "ok": 2, "tie": 1, "unscored": 0})
    return scored.path


def test_preference_export_in_the_released_dpo_layout(tmp_path):
    scored = scored_dir(tmp_path / "run")
    export_preferences(scored, tmp_path / "dpo", "tiny-dpo", {}, export_format="magpie")
    ours, ref = load(tmp_path / "dpo"), theirs("magpie-dpo")
    assert_same_schema(ours, ref)
    assert len(datasets.concatenate_datasets([ref, ours])) == 4
    assert len(ours) == 2  # the tie is left out, as in our own layout
    r = ours[0]
    key = store.DatasetDir(tmp_path / "run/instructions").manifest()["config_hash"]
    assert r["uuid"] == released.uuid_of(key, 0)  # the same uuid as the instruction's SFT row
    assert [x["score"] for x in r["rewards_armorm"]] == SCORES[0] and len(r["responses"]) == 5
    assert r["chosen"] == [{"content": r["instruction"], "role": "user"}, {"content": "Answer 3 to 0.", "role": "assistant"}]
    assert r["rejected"][1]["content"] == "Answer 1 to 0."
    assert r["gen_response_configs"] == {"engine": "hf", "max_tokens": 4096, "output_generator": GEN, "prompt": None,
                                         "repetition_penalty": 1.0, "stop_tokens": [], "temperature": 0.8,
                                         "top_p": 1.0}
    assert r["gen_input_configs"] == {"input_generator": GEN, "temperature": 1.0, "top_p": 0.995}
    assert (r["intent"], r["input_length"]) == ("to learn", len(r["instruction"]))
    # The scores the card, the plot and W&B show are the same in either layout.
    export_preferences(scored, tmp_path / "dpo-native", "tiny-dpo", {})
    assert pair_scores(tmp_path / "dpo") == pair_scores(tmp_path / "dpo-native") == ([0.4, 0.9], [0.1, 0.05])
    card = (tmp_path / "dpo/README.md").read_text()
    assert "Magpie-Align/Magpie-Pro-DPO-100K-v0.1" in card and "`stand-in-rm`" in card
    assert "**The data's**: CC BY-NC 4.0" in card and "license:\n- apache-2.0\n- cc-by-nc-4.0" in card


# -- train.data reads both layouts ---------------------------------------------------------------------------
def test_train_data_reads_the_released_layout_and_ours(tmp_path):
    tagged = make_run(tmp_path / "run", turns=2)
    export(tagged, tmp_path / "native", "x", {})
    export(tagged, tmp_path / "magpie", "x", {}, export_format="magpie")
    native, magpie = load_sft_dataset(str(tmp_path / "native")), load_sft_dataset(str(tmp_path / "magpie"))
    assert native["messages"] == magpie["messages"] and len(native) == 5
    assert native["messages"][0] == conversation(0, 2)
    for layout, turns in (("magpie-sft", 1), ("magpie-mt", 2)):
        ds = load_sft_dataset(str(RELEASED / layout))
        ref = theirs(layout)
        assert ds.column_names == ["messages", "source"] and len(ds) == len(ref)
        assert [len(m) for m in ds["messages"]] == [2 * turns] * len(ref)
        assert ds["messages"][0][0] == {"role": "user", "content": ref[0]["conversations"][0]["value"]}
    # a registered Magpie set's local copy in the released layout
    assert len(load_sft_dataset("magpie-pro-300k-filtered", path=str(RELEASED / "magpie-sft"))) == 3


def test_train_data_reads_released_and_our_preference_layouts(tmp_path):
    scored = scored_dir(tmp_path / "run")
    export_preferences(scored, tmp_path / "native", "x", {})
    export_preferences(scored, tmp_path / "magpie", "x", {}, export_format="magpie")
    native, magpie = load_preference_dataset(str(tmp_path / "native")), load_preference_dataset(str(tmp_path / "magpie"))
    for col in ("prompt", "chosen", "rejected"):
        assert native[col] == magpie[col]
    assert native["chosen"][0] == [{"role": "assistant", "content": "Answer 3 to 0."}]
    ref = load_preference_dataset("magpie-pro-dpo", path=str(RELEASED / "magpie-dpo"))
    assert len(ref) == 2 and ref["prompt"][1] == [{"role": "user", "content": "Write a haiku about autumn."}]
    assert ref["rejected"][0] == [{"role": "assistant", "content": "Sleep."}]
