"""Tool-call data (Magpie issue #31; core/tools.py): tools rendered into the pre-query template in each family's own
format, the answers' calls parsed into TRL's format and checked against the tools' schemas, and an export TRL's SFT
takes with its `tools` column.

The formats are checked on the families' real templates (tests/fixtures/chat_templates): a conversation whose answer
calls a tool is rendered through the template, and the answer part parsed back; TRL's own response parser must agree
where it knows the template. The embedded SmolLM2-135M-Instruct generates for real through Qwen2.5's template (ChatML,
which SmolLM2 speaks, with Qwen's <tools> block): SmolLM2's own template renders no tools.
"""
import json
from pathlib import Path

import pytest

from conftest import TINY  # tiny.yaml on hf (tests/fixtures/tiny_hf.yaml)
from core import reasoning, store, templates, tools
from core.engines import cut_at_stop
from synth.config import TOOLS_DIR, offered_tools

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/chat_templates"
QWEN25 = str(FIXTURES / "Qwen__Qwen2.5-7B-Instruct.json")
TOOLS = offered_tools(["weather", "calculator"])
QUESTION = "Will it rain in Lyon tomorrow, and what is 17.5 * 3?"
CALLS = [{"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {
    "location": "Lyon, France", "days_ahead": 1}}},
         {"id": "ghiJKL456", "type": "function", "function": {"name": "calculate", "arguments": {
             "expression": "17.5 * 3"}}}]
FORMATS = {"Qwen__Qwen2.5-7B-Instruct": "hermes", "Qwen__Qwen3-8B": "hermes", "HuggingFaceTB__SmolLM3-3B": "hermes",
           "meta-llama__Llama-3.1-8B-Instruct": "llama3_json", "meta-llama__Llama-3.3-70B-Instruct": "llama3_json",
           "meta-llama__Llama-4-Scout-17B-16E-Instruct": "llama3_json",
           "mistralai__Mistral-7B-Instruct-v0.3": "mistral",
           "mistralai__Mistral-Small-3.2-24B-Instruct-2506": "mistral", "openai__gpt-oss-20b": "harmony",
           "HuggingFaceTB__SmolLM2-135M-Instruct": None, "meta-llama__Meta-Llama-3-8B-Instruct": None,
           "google__gemma-2-9b-it": None}
# One call per answer: Llama-3.x's templates raise on two; a Harmony answer ends at its first call's <|call|>
ONE_CALL = {"meta-llama__Llama-3.1-8B-Instruct", "meta-llama__Llama-3.3-70B-Instruct",
            "meta-llama__Llama-4-Scout-17B-16E-Instruct", "openai__gpt-oss-20b"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def render(d: dict, messages: list[dict], gen: bool, kw: dict | None = None) -> str:
    return templates._render(d["chat_template"], messages, gen, d["bos_token"], d["eos_token"], kw)


def derived(name: str, kw: dict | None = None) -> tuple[dict, templates.Template]:
    d = fixture(name)
    return d, templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"], kw)


def as_parsed(calls: list[dict]) -> list[tools.Call]:
    return [tools.Call(c["function"]["name"], c["function"]["arguments"]) for c in calls]


def answer_part(d: dict, t: templates.Template, reply: dict) -> str:
    """What the model writes for `reply`, as the template renders it: after the generation prompt, up to the answer's
    stop string."""
    user = {"role": "user", "content": QUESTION}
    full, prompt = render(d, [user, reply], False, {"tools": TOOLS}), render(d, [user], True, {"tools": TOOLS})
    assert full.startswith(prompt)
    return cut_at_stop(full[len(prompt):], [*t.response_stop_strings, d["eos_token"]])[0]


def parse_answer(text: str, t: templates.Template) -> tuple[str, list[tools.Call]]:
    """As the responses stage reads an answer: reasoning first, then the calls (Harmony's from the raw text)."""
    parts = reasoning.split(text, t)
    rest, calls = tools.parse(text if t.tool_format == "harmony" else parts.answer, t.tool_format)
    return (parts.answer if t.tool_format == "harmony" else rest), calls


# -- the families' formats ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_family_says_how_it_writes_calls(name):
    assert derived(name)[1].tool_format == FORMATS[name]


@pytest.mark.parametrize("name", sorted(n for n, f in FORMATS.items() if f and n != "HuggingFaceTB__SmolLM3-3B"))
def test_calls_rendered_by_the_template_parse_back(name):
    d, t = derived(name, {"tools": TOOLS})
    calls = CALLS[:1] if name in ONE_CALL else CALLS
    text = answer_part(d, t, {"role": "assistant", "content": "", "tool_calls": calls})
    content, found = parse_answer(text, t)
    assert found == as_parsed(calls) and content == ""
    assert [tools.check(c, TOOLS) for c in found] == [None] * len(calls)


def test_smollm3_writes_the_hermes_format_its_system_prompt_asks_for():
    """SmolLM3's template drops an answer's calls when it renders one, so the documented format is used: its system
    prompt tells the model to answer with <tool_call>{"name": ..., "arguments": ...}</tool_call>."""
    _, t = derived("HuggingFaceTB__SmolLM3-3B", {"tools": TOOLS})
    assert "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>" in t.pre_query_template
    text = '<think>\nLyon, tomorrow.\n</think>\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon, ' \
           'France", "days_ahead": 1}}\n</tool_call>'
    assert parse_answer(text, t) == ("", as_parsed(CALLS[:1]))


def test_text_beside_the_calls_stays_the_answer():
    d, t = derived("Qwen__Qwen2.5-7B-Instruct", {"tools": TOOLS})
    text = answer_part(d, t, {"role": "assistant", "content": "Let me look both up.", "tool_calls": CALLS})
    assert parse_answer(text, t) == ("Let me look both up.", as_parsed(CALLS))
    assert parse_answer("Lyon will be sunny.", t) == ("Lyon will be sunny.", [])


@pytest.mark.parametrize("name", ["Qwen__Qwen3-8B", "meta-llama__Llama-3.3-70B-Instruct", "openai__gpt-oss-20b"])
def test_trl_reads_the_same_calls(name):
    """TRL's response templates (trl.chat_template_utils.add_response_schema) for the templates it ships."""
    from trl.chat_template_utils import add_response_schema

    d, t = derived(name, {"tools": TOOLS})
    calls = CALLS[:1]
    text = answer_part(d, t, {"role": "assistant", "content": "", "tool_calls": calls})
    tok = add_response_schema(templates.tokenizer_from_config({**d, "added_tokens": d.get("added_tokens", {})}))
    end = {"hermes": "<|im_end|>", "llama3_json": "<|eot_id|>", "harmony": "<|call|>"}[t.tool_format]
    prompt = render(d, [{"role": "user", "content": QUESTION}], True, {"tools": TOOLS})
    theirs = tok.parse_response(text + end, prefix=prompt)["tool_calls"]
    ours = [c.trl() for c in parse_answer(text, t)[1]]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in theirs] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in ours]


def test_gpt_oss_calls_after_reasoning_and_with_the_recipient_in_the_channel():
    _, t = derived("openai__gpt-oss-20b", {"tools": TOOLS})
    # the recipient may also follow the channel (the Harmony spec), with a <|constrain|> on the format
    text = ('<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary '
            'to=functions.get_weather <|constrain|>json<|message|>{"location": "Lyon, France", "days_ahead": 1}')
    assert parse_answer(text, t) == ("", as_parsed(CALLS[:1]))
    assert reasoning.split(text, t).reasoning == "Need the weather."


# -- checking a call against its tool ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,reason", [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon"}}\n</tool_call>', None),
    ('<tool_call>\n{"name": "book_flight", "arguments": {"to": "Lyon"}}\n</tool_call>', "unknown_tool"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon"\n</tool_call>', "bad_json"),
    ('<tool_call>\n{"arguments": {"location": "Lyon"}}\n</tool_call>', "bad_json"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"unit": "celsius"}}\n</tool_call>', "missing_arguments"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon", "days_ahead": "1"}}\n</tool_call>',
     "wrong_type"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon", "unit": "kelvin"}}\n</tool_call>',
     "invalid_value"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon", "days_ahead": 9}}\n</tool_call>',
     "invalid_value"),
    ('<tool_call>\n{"name": "get_weather", "arguments": "{\\"location\\": \\"Lyon\\"}"}\n</tool_call>', None),
])
def test_a_call_is_checked_against_its_tools_schema(text, reason):
    (call,) = tools.parse(text, "hermes")[1]
    assert tools.check(call, TOOLS) == reason


def test_an_argument_the_schema_forbids_is_named():
    strict = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}}}]
    assert tools.check(tools.Call("f", {"a": 1, "b": 2}), strict) == "unknown_argument"
    assert tools.check(tools.Call("f", {"a": 1}), strict) is None


@pytest.mark.parametrize("fmt,text", [
    ("llama3_json", '{"name": "get_weather", "parameters": {"location": '),
    ("mistral", "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"location\": }]"),
    ("mistral", "[TOOL_CALLS]get_weather[ARGS]{\"location\": "),
    ("harmony", " to=functions.get_weather<|channel|>commentary json<|message|>{\"location\": "),
])
def test_malformed_calls_of_every_format_are_bad_json(fmt, text):
    calls = tools.parse(text, fmt)[1]
    assert calls and all(tools.check(c, TOOLS) == "bad_json" for c in calls)


def test_a_plain_answer_has_no_calls_in_any_format():
    for fmt in tools.FORMATS:
        assert tools.parse("Lyon will be sunny tomorrow.", fmt)[1] == []


# -- the tools ------------------------------------------------------------------------------------------------------
def test_the_shipped_tools_load_by_name_file_or_folder(tmp_path):
    names = [t["function"]["name"] for t in offered_tools(["weather", "calendar"])]
    assert names == ["get_weather", "create_event", "list_events"]
    assert len(offered_tools([str(TOOLS_DIR)])) == len([t for f in TOOLS_DIR.glob("*.json")
                                                        for t in offered_tools([str(f)])])
    bare = tmp_path / "f.json"
    bare.write_text('{"name": "lookup", "parameters": {"type": "object", "properties": {}}}')
    assert offered_tools([str(bare)]) == [{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("content,match", [
    ('{"type": "function", "function": {"description": "no name"}}', "has no name"),
    ('{"name": "f", "parameters": {"type": "array"}}', "type object"),
    ("{not json", "not valid JSON"),
    ('[{"name": "f"}, {"name": "f"}]', "given twice"),
])
def test_a_bad_tool_file_is_named(tmp_path, content, match):
    f = tmp_path / "t.json"
    f.write_text(content)
    with pytest.raises(ValueError, match=match):
        offered_tools([str(f)])
    with pytest.raises(ValueError, match="no such file"):
        offered_tools(["no-such-tool"])


def test_the_config_checks_tools_before_anything_loads(tmp_path):
    from synth.config import parse

    with pytest.raises(ValueError, match="no such file or folder 'nope'"):
        parse(["--config", TINY, "--tools", "nope"])
    parsed = parse(["--config", TINY, "--tools", "weather", "calculator"])
    assert parsed[1].tools == ["weather", "calculator"]


# -- the pre-query template with tools --------------------------------------------------------------------------
@pytest.mark.parametrize("name,marker", [
    ("Qwen__Qwen3-8B", "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\""),
    ("meta-llama__Llama-3.1-8B-Instruct", "Given the following functions"),
    ("mistralai__Mistral-7B-Instruct-v0.3", "[AVAILABLE_TOOLS]"),
    ("openai__gpt-oss-20b", "type get_weather = (_: {"),
])
def test_the_pre_query_template_shows_the_tools_in_the_familys_format(name, marker):
    d, t = derived(name, {"tools": TOOLS})
    assert marker in t.pre_query_template
    # it is what the template renders before a user's message, tools included (the overrides' cuts do not apply)
    own = render(d, [{"role": "user", "content": "MAGPIEQ"}], False, {"tools": TOOLS})
    assert own.startswith(t.pre_query_template) and own[len(t.pre_query_template):].startswith("MAGPIEQ")
    if t.family in ("llama-3.1", "mistral"):
        assert any("Not applied with tools" in n for n in t.notes)


def test_a_template_without_tools_is_refused():
    d = fixture("HuggingFaceTB__SmolLM2-135M-Instruct")
    with pytest.raises(ValueError, match="does not render tools"):
        templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"], {"tools": TOOLS})


# -- for real, with the embedded model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    from synth.__main__ import main

    out = tmp_path_factory.mktemp("tools")
    argv = ["run", "--config", TINY, "--output_dir", str(out), "--stages", "instructions", "responses",
            "--chat_template", QWEN25, "--tools", "weather", "calculator", "--engine", "hf", "--mix", "single",
            "--total_prompts", "4", "--n", "4", "--max_tokens", "32", "--response_max_tokens", "48",
            "--hf_batch_size", "8", "--response_batch_size", "8", "--report_to", "none"]
    assert main(argv) == 0
    return out


def test_instructions_are_written_against_the_tools(tool_run):
    ds = store.DatasetDir(tool_run / "instructions")
    m = ds.manifest()
    pre = m["template"]["pre_query_template"]
    assert "<tools>" in pre and '"name": "get_weather"' in pre and pre.endswith("<|im_start|>user\n")
    assert m["config"]["tools"] == TOOLS  # the schemas themselves key the run: an edited file is another run
    for r in ds.records():
        assert json.loads(r["tools"]) == TOOLS and r["pre_query_template"] == pre


def test_answers_are_parsed_checked_and_counted(tool_run):
    src = store.DatasetDir(tool_run / "instructions").records()
    ds = store.DatasetDir(tool_run / "responses")
    m, rows = ds.manifest(), ds.records()
    counts = m["counts"]
    assert m["tool_format"] == "hermes" and m["sampling"]["skip_special_tokens"] is True
    assert set(counts["dropped"]) == {"tool_call_" + e for e in tools.ERRORS}
    assert counts["pairs"] + sum(counts["dropped"].values()) == len(src)
    assert counts["tool_answers"] + counts["no_tool_call"] == counts["pairs"] == len(rows)
    for r in rows:
        last = r["messages"][-1]
        assert last["role"] == "assistant" and last["content"] == r["response"] and "<tool_call>" not in r["response"]
        if r["tool_calls"]:
            assert last["tool_calls"] == r["tool_calls"]
            for c in r["tool_calls"]:
                call = tools.Call(c["function"]["name"], json.loads(c["function"]["arguments"]))
                assert tools.check(call, TOOLS) is None


def test_the_export_is_what_trl_sft_takes_with_tools(tool_run, tmp_path):
    """TRL's dataset format for tool calling: `messages` whose assistant turns carry tool_calls [{type: function,
    function: {name, arguments}}] with arguments an object, and a `tools` column of tool schemas. A response set with a
    call (the embedded model seldom writes one: one is added here, as a Hermes answer parsed by the stage's parser)."""
    import datasets

    from synth.export import export

    rows = store.DatasetDir(tool_run / "responses").records()
    d, t = derived("Qwen__Qwen2.5-7B-Instruct", {"tools": TOOLS})
    text = answer_part(d, t, {"role": "assistant", "content": "", "tool_calls": CALLS})
    _, found = parse_answer(text, t)
    calls = [c.trl() for c in found]
    called = {**rows[0], "response": "", "tool_calls": calls,
              "messages": [rows[0]["messages"][0], {"role": "assistant", "content": "", "tool_calls": calls}]}
    src = store.DatasetDir(tmp_path / "responses")
    src.begin("responses", {"test": 1})
    src.write_shard(0, [called, *rows[1:]], {"kept": len(rows)})
    src.finish({"pairs": len(rows)})
    export(src.path, tmp_path / "export", "tool-test")
    out = datasets.load_dataset("parquet", data_dir=str(tmp_path / "export/data"), split="train")
    first = out[0]
    assert first["tools"] == TOOLS
    assert first["messages"][1]["tool_calls"] == [{"type": "function", "function": c["function"]} for c in CALLS]
    # rendered as TRL's SFT renders a row (apply_chat_template with the row's tools), the calls are the model's format
    rendered = render(d, [{k: v for k, v in m.items() if v is not None} for m in first["messages"]], False,
                      {"tools": first["tools"]})
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Lyon, France", "days_ahead": 1}}' in rendered
    line = json.loads((tmp_path / "export/sharegpt.jsonl").read_text().splitlines()[0])
    assert json.loads(line["tools"]) == TOOLS
    assert line["conversations"][-1] == {"from": "function_call", "value": json.dumps(
        [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in CALLS])}
