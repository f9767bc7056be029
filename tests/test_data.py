"""SFT dataset loaders (train/data.py): each Table-1 source, from its own schema to TRL `messages`."""
import json
import logging
import re
from collections import Counter
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train import data
from train.data import dataset_names, get_spec, load_sft_dataset, to_messages

FIX = Path(__file__).parent / "fixtures" / "sft"

# name -> (conversations kept, drops by reason) for tests/fixtures/sft/<name>.*
EXPECTED = {
    "magpie-air-300k-raw": (2, {"empty_turn": 1}),
    "magpie-pro-300k-raw": (3, {}),
    "magpie-air-300k-filtered": (3, {}),
    "magpie-pro-300k-filtered": (3, {"no_final_assistant": 1}),
    "magpie-air-mt": (3, {}),
    "magpie-pro-mt": (3, {}),
    "messages": (2, {"not_alternating": 1}),
    "self-instruct-llama3": (3, {}),
    "sharegpt": (3, {"not_alternating": 1, "unknown_role": 1}),
    "evol-instruct": (3, {}),
    "openhermes-1": (3, {"empty_turn": 1}),
    "tulu-v2-mix": (3, {}),
    "wildchat": (2, {"empty_turn": 1}),
    "openhermes-2.5": (3, {}),
    "genqa": (3, {}),
    "ultrachat": (2, {"empty": 1}),
}


def fixture(name: str) -> Path:
    found = [p for p in FIX.iterdir() if p.name.rsplit(".", 1)[0] == name]
    assert len(found) == 1, f"expected one fixture for {name!r} in {FIX}, found {found}"
    return found[0]


def assert_well_formed(messages):
    body = messages[1:] if messages[0]["role"] == "system" else messages
    assert body, messages
    for i, m in enumerate(body):
        assert set(m) == {"role", "content"}
        assert m["role"] == ("user" if i % 2 == 0 else "assistant"), messages
        assert m["content"].strip()
    assert body[-1]["role"] == "assistant"


def test_every_registered_dataset_has_a_fixture_and_an_expectation():
    stems = {p.name.rsplit(".", 1)[0] for p in FIX.iterdir()}
    missing = set(dataset_names()) - stems
    assert not missing, f"registered without a fixture in {FIX}: {sorted(missing)}"
    assert set(EXPECTED) == set(dataset_names()), "add the new loader to EXPECTED with its counts"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_on_its_fixture(name, caplog):
    kept, drops = EXPECTED[name]
    with caplog.at_level(logging.INFO, logger="train.data"):
        ds = load_sft_dataset(name, path=str(fixture(name)))
    assert ds.column_names == ["messages", "source"]
    assert len(ds) == kept
    assert set(ds["source"]) == {name}
    for messages in ds["messages"]:
        assert_well_formed(messages)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{name}: kept")]
    assert summary and f"kept {kept} of {kept + sum(drops.values())}" in summary[-1]
    for reason, n in drops.items():
        assert f"{reason}={n}" in summary[-1]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_drops_are_counted_by_reason(name):
    f = fixture(name)
    raw = datasets.load_dataset("parquet" if f.suffix == ".parquet" else "json", data_files=str(f), split="train")
    ds, drops = to_messages(raw, name)
    assert drops == Counter(EXPECTED[name][1])
    assert len(ds) + sum(drops.values()) == len(raw)


def test_conversions_keep_the_content():
    oh1 = load_sft_dataset("openhermes-1", path=str(fixture("openhermes-1")))["messages"]
    assert oh1[0] == [{"role": "user", "content": "Translate the sentence to German.\n\nI like apples."},
                      {"role": "assistant", "content": "Ich mag Äpfel."}]
    assert oh1[1][0]["content"] == "What is the boiling point of water at sea level?"  # empty input adds nothing

    sg = load_sft_dataset("sharegpt", path=str(fixture("sharegpt")))["messages"]
    assert len(sg[0]) == 4
    assert sg[1][0] == {"role": "user", "content": "Thanks, summarize it."}  # leading gpt turn removed
    assert sg[2][1] == {"role": "assistant", "content": "Here are today's headlines."}  # "bing" is the assistant

    oh25 = load_sft_dataset("openhermes-2.5", path=str(fixture("openhermes-2.5")))["messages"]
    assert [m["role"] for m in oh25[0]] == ["system", "user", "assistant"]

    mt = load_sft_dataset("magpie-pro-mt", path=str(fixture("magpie-pro-mt")))["messages"]
    assert all(len(m) == 4 for m in mt)
    assert mt[2][3]["content"] == "Buenos días."


def _export_dir(root: Path, n: int, shard: str = "part-00000.parquet") -> Path:
    rows = [{"id": f"r{i}", "instruction": f"Question {i}?", "response": f"Answer {i}.",
             "messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}."}],
             "task_category": "Math"} for i in range(n)]
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / shard)
    (root / "README.md").write_text("# a card\n")
    return root


def test_magpie_export_dir_loads_by_path(tmp_path):
    out = _export_dir(tmp_path / "export", 6)
    ds = load_sft_dataset(str(out))
    assert ds.column_names == ["messages", "source"] and len(ds) == 6
    assert ds[0]["messages"] == [{"role": "user", "content": "Question 0?"},
                                 {"role": "assistant", "content": "Answer 0."}]
    assert set(ds["source"]) == {"messages"}
    # the same dir as the local copy of a released Magpie set
    assert set(load_sft_dataset("magpie-air-300k-filtered", path=str(out))["source"]) == {"magpie-air-300k-filtered"}


def test_export_with_several_shards(tmp_path):
    out = _export_dir(tmp_path / "export", 3, shard="train-00000-of-00002.parquet")
    rows = [{"id": "z", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}]
    pq.write_table(pa.Table.from_pylist(rows), out / "data" / "train-00001-of-00002.parquet")
    assert len(load_sft_dataset(str(out))) == 4


def test_wrong_schema_names_the_file_and_the_columns():
    f = fixture("sharegpt")
    with pytest.raises(ValueError) as e:
        load_sft_dataset("ultrachat", path=str(f))
    msg = str(e.value)
    assert str(f) in msg and "conversations" in msg and "id" in msg  # found
    assert "[messages]" in msg  # expected
    with pytest.raises(ValueError, match=r"\[instruction, output\]"):
        load_sft_dataset("openhermes-1", path=str(fixture("genqa")))


def test_unknown_name_suggests_close_names_and_where_the_list_is():
    with pytest.raises(ValueError) as e:
        load_sft_dataset("sharegtp")
    msg = str(e.value)
    assert msg.startswith("dataset sharegtp: ") and "did you mean sharegpt?" in msg
    assert "python -m train.data" in msg and "'" not in msg.split(";")[0]  # not a KeyError's quoted repr
    with pytest.raises(ValueError, match="no such registered set; \\(`python -m train.data`"):
        load_sft_dataset("zzz")  # nothing close: no suggestion


@pytest.mark.parametrize("ref", ["/no/such/export", "runs/none/export", "./export", "~/no-such-magpie-set",
                                 "missing.jsonl"])
def test_missing_local_dataset_is_named_as_a_path(ref):
    with pytest.raises(FileNotFoundError, match=f"^dataset {re.escape(ref)}: no such directory or file; give a Magpie"):
        data.find_source(ref)


def test_missing_or_empty_local_copy_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="local copy of 'sharegpt' /no/such.json: no such directory or file"):
        load_sft_dataset("sharegpt", path="/no/such.json")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: a directory without data/\\*.parquet"):
        data.find_source(str(tmp_path))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="x.csv: unsupported file type '.csv'"):
        data.find_source(str(tmp_path / "x.csv"))


def test_max_samples_is_seeded_and_reproducible(tmp_path):
    out = _export_dir(tmp_path / "export", 50)
    a = load_sft_dataset(str(out), max_samples=10, seed=1)["messages"]
    b = load_sft_dataset(str(out), max_samples=10, seed=1)["messages"]
    c = load_sft_dataset(str(out), max_samples=10, seed=2)["messages"]
    assert len(a) == 10 and a == b and a != c
    assert len(load_sft_dataset(str(out), max_samples=100)) == 50


def test_hub_loading_uses_the_spec(monkeypatch):
    calls = []
    raw = datasets.load_dataset("json", data_files=str(fixture("ultrachat")), split="train")

    def fake_load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split, kw))
        return raw

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)
    ds = load_sft_dataset("ultrachat")
    assert calls[-1][:3] == ("HuggingFaceH4/ultrachat_200k", None, "train_sft") and len(ds) == 2
    load_sft_dataset("ultrachat", split="test_sft")
    assert calls[-1][2] == "test_sft"


def test_specs_are_documented():
    for name in dataset_names():
        spec = get_spec(name)
        assert spec.notes, name
        if name != "messages":
            assert spec.hub_id and "/" in spec.hub_id and spec.paper_size, name
    assert get_spec("magpie-pro-300k-raw").split == "train[:300000]"
    assert set(get_spec("genqa").split.split("+")) >= {"code", "dialog", "math", "mmlu", "writing"}
    with pytest.raises(ValueError, match="path="):
        load_sft_dataset("messages")


# -- tool-call and reasoning data of ours (core/tools.py, core/reasoning.py, synth/export.py) ------------------------
CHAT_TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
CALLS = [{"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {
    "location": "Lyon, France", "days_ahead": 1}}},
         {"id": "ghiJKL456", "type": "function", "function": {"name": "calculate", "arguments": {
             "expression": "17.5 * 3"}}}]
QUESTION = "Will it rain in Lyon tomorrow, and what is 17.5 * 3?"


def shipped_tools(*names: str) -> list[dict]:
    return [json.loads((Path(__file__).parent.parent / "synth/data/tools" / f"{n}.json").read_text()) for n in names]


def template_tokenizer(name: str):
    """A tokenizer that holds only a real chat template (tests/fixtures/chat_templates) and its special tokens: enough
    for TRL to render a row as text, with no model files."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    d = json.loads((CHAT_TEMPLATES / f"{name}.json").read_text())
    special = {k: d[k] for k in ("bos_token", "eos_token") if d.get(k)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  **special)
    tok.chat_template = d["chat_template"]
    return tok


def test_tool_calls_tool_turns_and_reasoning_are_kept(caplog):
    with caplog.at_level(logging.INFO, logger="train.data"):
        ds = load_sft_dataset(str(FIX / "export-tools.jsonl"))
    assert ds.column_names == ["messages", "tools", "source"] and len(ds) == 4
    summary = [r.getMessage() for r in caplog.records if "kept" in r.getMessage()][-1]
    assert "kept 4 of 7" in summary and "bad_tool_call=1, empty_turn=1, not_alternating=1" in summary
    calls, tool, think, plain = ds
    # the Magpie tool-call record: the request and the calls that answer it, with empty content
    assert calls["messages"] == [{"role": "user", "content": QUESTION},
                                 {"role": "assistant", "content": "", "tool_calls": CALLS}]
    assert calls["tools"] == shipped_tools("weather", "calculator")
    # JSON text (tools, and the OpenAI API's arguments) becomes objects; a tool turn keeps its name and call id
    assert tool["tools"] == shipped_tools("calculator")
    assert tool["messages"][2] == {"role": "assistant", "content": "Let me compute it.", "tool_calls": [
        {"type": "function", "function": {"name": "calculate", "arguments": {"expression": "17.5 * 3"}}}]}
    assert tool["messages"][3] == {"role": "tool", "name": "calculate", "tool_call_id": "call0", "content": "52.5"}
    assert [m["role"] for m in tool["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert think["messages"][1] == {"role": "assistant", "content": "No: 91 = 7 * 13.",
                                    "reasoning_content": "Try small primes: 91 / 7 = 13."}
    # each turn holds its own keys only; a record without tools has none
    assert plain["messages"] == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]
    assert think["tools"] is None and plain["tools"] is None


def _export_shards(root: Path) -> Path:
    """An export dir as synth/export.py writes it (`with_json`: tools and arguments as Arrow JSON), from records as
    the stages hold them (tools as JSON text, arguments as the OpenAI API's JSON text: core.tools.Call.trl): a shard
    with a call, one with reasoning, one with neither (its turns a plain {role, content} struct)."""
    from synth.export import with_json

    text_calls = [{"type": c["type"], "function": {"name": c["function"]["name"],
                                                   "arguments": json.dumps(c["function"]["arguments"])}}
                  for c in CALLS]
    tools = json.dumps(shipped_tools("weather", "calculator"))
    shards = [
        [{"id": "t0", "messages": [{"role": "user", "content": QUESTION},
                                   {"role": "assistant", "content": "", "tool_calls": text_calls}], "tools": tools},
         {"id": "t1", "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
          "tools": tools}],
        [{"id": "r0", "messages": [{"role": "user", "content": "Is 91 prime?"},
                                   {"role": "assistant", "content": "No.", "reasoning_content": "91 = 7 * 13."}],
          "tools": None}],
        [{"id": "p0", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
          "tools": None}]]
    (root / "data").mkdir(parents=True)
    for k, rows in enumerate(shards):
        pq.write_table(with_json(pa.Table.from_pylist(rows)), root / "data" / f"part-{k:05d}.parquet")
    return root


def test_native_export_with_tool_calls_and_reasoning_loads_for_trl(tmp_path):
    ds = load_sft_dataset(str(_export_shards(tmp_path / "export")))
    assert ds.column_names == ["messages", "tools", "source"] and len(ds) == 4
    called, greeted, thought, plain = ds
    assert called["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": c["function"]} for c in CALLS]}
    assert called["tools"] == greeted["tools"] == shipped_tools("weather", "calculator")
    # Parquet gives every turn of a shard every key; the loaded turns have only theirs
    assert greeted["messages"] == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert thought["messages"][1] == {"role": "assistant", "content": "No.", "reasoning_content": "91 = 7 * 13."}
    assert plain["messages"] == [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]
    assert thought["tools"] is None and plain["tools"] is None
    sample = load_sft_dataset(str(tmp_path / "export"), max_samples=4, seed=3)
    assert sorted(map(str, sample["messages"])) == sorted(map(str, ds["messages"]))


def test_sharegpt_export_of_tool_calls_reads_back_as_messages(tmp_path):
    """sharegpt.jsonl writes calls as LLaMA-Factory's `function_call` turns (synth/export.to_sharegpt); read back, they
    are the assistant's tool_calls again (without call ids, which that format has no room for)."""
    from synth.export import to_sharegpt

    text_calls = [{"type": "function", "function": {"name": c["function"]["name"],
                                                    "arguments": json.dumps(c["function"]["arguments"])}}
                  for c in CALLS]
    tools = shipped_tools("weather", "calculator")
    records = [{"id": "a", "tools": json.dumps(tools), "messages": [
                   {"role": "user", "content": QUESTION},
                   {"role": "assistant", "content": "Checking both.", "tool_calls": text_calls}]},
               {"id": "b", "tools": None, "messages": [{"role": "user", "content": "Hi?"},
                                                       {"role": "assistant", "content": "Hello."}]}]
    f = tmp_path / "sharegpt.jsonl"
    f.write_text("".join(json.dumps(to_sharegpt(r)) + "\n" for r in records))
    a, b = load_sft_dataset(str(f))
    assert a["messages"] == [{"role": "user", "content": QUESTION}, {
        "role": "assistant", "content": "Checking both.",
        "tool_calls": [{"type": "function", "function": c["function"]} for c in CALLS]}]
    assert a["tools"] == tools
    assert b["messages"] == records[1]["messages"] and b["tools"] is None


def test_trl_renders_a_tool_call_row_through_a_real_template():
    """A loaded row as SFTTrainer renders it: TRL's apply_chat_template with the row's `tools` (what its SFT tokenizer
    passes as tools=) through Qwen2.5's own template: the tools in its <tools> block, the calls in its <tool_call> form
    with the arguments as an object, the results in <tool_response>; and the reasoning through Qwen3's <think>."""
    from trl import apply_chat_template

    calls, tool, think, _ = load_sft_dataset(str(FIX / "export-tools.jsonl"))
    qwen25 = template_tokenizer("Qwen__Qwen2.5-7B-Instruct")
    text = apply_chat_template({"messages": calls["messages"]}, qwen25, tools=calls["tools"])["text"]
    assert "<tools>\n" + "\n".join(json.dumps(t) for t in shipped_tools("weather", "calculator")) + "\n</tools>" in text
    assert text.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
                         '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon, France", '
                         '"days_ahead": 1}}\n</tool_call>\n'
                         '<tool_call>\n{"name": "calculate", "arguments": {"expression": "17.5 * 3"}}\n</tool_call>'
                         "<|im_end|>\n")
    text = apply_chat_template({"messages": tool["messages"]}, qwen25, tools=tool["tools"])["text"]
    assert text.startswith("<|im_start|>system\nYou are a careful assistant.\n\n# Tools")
    assert ('<|im_start|>assistant\nLet me compute it.\n<tool_call>\n{"name": "calculate", "arguments": '
            '{"expression": "17.5 * 3"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n52.5\n'
            "</tool_response><|im_end|>\n<|im_start|>assistant\n17.5 * 3 = 52.5.<|im_end|>\n") in text
    text = apply_chat_template({"messages": think["messages"]}, template_tokenizer("Qwen__Qwen3-8B"),
                               tools=think["tools"])["text"]
    assert text.endswith("<|im_start|>assistant\n<think>\nTry small primes: 91 / 7 = 13.\n</think>\n\n"
                         "No: 91 = 7 * 13.<|im_end|>\n")
