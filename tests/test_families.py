"""The chat families of 2025-2026 on their real chat templates (tests/fixtures/chat_templates, sources in its README).

For each: the pre-query template written out, what follows the user's message, the end of turn, the stop strings
and, from the stored special tokens, the stop ids; a round trip through the template itself; flags (enable_thinking,
reasoning_effort) and the date fixed by the config, whatever today is. No model loads: only Jinja renders.
"""
import datetime
import json
from pathlib import Path

import pytest

from core import templates

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def render(d: dict, messages: list[dict], gen: bool, template_kwargs: dict | None = None) -> str:
    return templates._render(d["chat_template"], messages, gen, d["bos_token"], d["eos_token"], template_kwargs)


# SmolLM3's default custom instructions in thinking mode, and Mistral-Small-3.2's default system prompt (the date
# aside), as their templates write them.
SMOLLM3_THINK = (
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves "
    "thoroughly exploring questions through a systematic thinking process before providing the final precise and "
    "accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracking, and iteration to develop well-considered thinking process. Please "
    "structure your response into two main sections: Thought and Solution using the specified format: <think> "
    "Thought section </think> Solution section. In the Thought section, detail your reasoning process in steps. Each "
    "step should include detailed considerations such as analysing questions, summarizing relevant findings, "
    "brainstorming new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. In the Solution section, based on various attempts, explorations, and reflections from the "
    "Thought section, systematically present the final solution that you deem correct. The Solution section should "
    "be logical, accurate, and concise and detail necessary steps needed to reach the conclusion.")
MISTRAL_SMALL_3_2_SYSTEM = (
    "You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in "
    "Paris.\nYour knowledge base was last updated on 2023-10-01. The current date is {date}.\n\nWhen you're not sure "
    "about some information or when the user's request requires up-to-date or specific data, you must use the "
    "available tools to fetch the information. Do not hesitate to use tools whenever they can provide a more accurate "
    "or complete response. If no relevant tools are available, then clearly state that you don't have the "
    "information and avoid making up anything.\n\nIf the user's question is not clear, ambiguous, or does not "
    "provide enough context for you to accurately answer the question, you do not try to answer it right away and "
    "you rather ask the user to clarify their request (e.g. \"What are some good restaurants around me?\" => \"Where "
    "are you?\" or \"When is the next flight to Tokyo\" => \"Where do you travel from?\").\nYou are always very "
    "attentive to dates, and when asked about information at specific dates, you discard information that is at "
    "another date.\nYou follow these instructions in all languages, and always respond to the user in the language "
    "they use or request.\nNext sections describe the capabilities that you have.\n\n# WEB BROWSING INSTRUCTIONS\n\n"
    "You cannot perform any web search or access internet to open URLs, links etc. If it seems like the user is "
    "expecting you to do so, you clarify the situation and ask the user to copy paste the text directly in the "
    "chat.\n\n# MULTI-MODAL INSTRUCTIONS\n\nYou have the ability to read images, but you cannot generate images. You "
    "also cannot transcribe audio files or videos.\nYou cannot read nor transcribe audio files or videos.\n\n# TOOL "
    "CALLING INSTRUCTIONS\n\nYou may have access to tools that you can use to fetch information or perform actions. "
    "You must use these tools in the following situations:\n\n1. When the request requires up-to-date information.\n"
    "2. When the request requires specific data that you do not have in your knowledge base.\n3. When the request "
    "involves actions that you cannot perform without tools.\n\nAlways prioritize using tools to provide the most "
    "accurate and helpful response. If tools are not available, inform the user that you cannot perform the "
    "requested action at the moment.")
GPT_OSS_SYSTEM = ("<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge "
                  "cutoff: 2024-06\nCurrent date: {date}\n\nReasoning: {effort}\n\n# Valid channels: analysis, "
                  "commentary, final. Channel must be included for every message.<|end|>")

# (fixture, template kwargs) -> what derive() must give: the pre-query template, what the template renders after the
# user's message with the generation prompt (post), the end of turn, the stop strings (instructions), the stop ids
# from the stored special tokens (None: the fixture has none), the multi-turn append template and the override.
FAMILIES = {
    ("Qwen__Qwen3-8B", "thinking on (default)"): dict(
        kwargs={}, pre="<|im_start|>user\n", post="<|im_end|>\n<|im_start|>assistant\n", eot="<|im_end|>",
        stops=("<|im_end|>", "<|im_start|>"), ids=[151644, 151645], mt="<|im_start|>user\n", family=None),
    ("Qwen__Qwen3-8B", "thinking off"): dict(
        kwargs={"enable_thinking": False}, pre="<|im_start|>user\n",
        post="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", eot="<|im_end|>",
        stops=("<|im_end|>", "<|im_start|>", "<think>", "</think>"), ids=[151644, 151645, 151667, 151668],
        mt="<|im_start|>user\n", family=None),
    ("openai__gpt-oss-20b", "default reasoning"): dict(
        kwargs={}, pre=GPT_OSS_SYSTEM.format(date="2024-07-26", effort="medium") + "<|start|>user<|message|>",
        post="<|end|><|start|>assistant", eot="<|return|>",
        stops=("<|end|>", "<|return|>", "<|start|>", "<|message|>", "<|startoftext|>"),
        ids=[199998, 200002, 200006, 200007, 200008], mt="<|end|><|start|>user<|message|>", family="gpt-oss"),
    ("openai__gpt-oss-20b", "reasoning_effort low, dated"): dict(
        kwargs={"reasoning_effort": "low", "template_date": "2025-08-05"},
        pre=GPT_OSS_SYSTEM.format(date="2025-08-05", effort="low") + "<|start|>user<|message|>",
        post="<|end|><|start|>assistant", eot="<|return|>",
        stops=("<|end|>", "<|return|>", "<|start|>", "<|message|>", "<|startoftext|>"),
        ids=[199998, 200002, 200006, 200007, 200008], mt="<|end|><|start|>user<|message|>", family="gpt-oss"),
    ("google__gemma-3-4b-it", ""): dict(
        kwargs={}, pre="<bos><start_of_turn>user\n", post="<end_of_turn>\n<start_of_turn>model\n",
        eot="<end_of_turn>", stops=("<end_of_turn>", "<start_of_turn>", "<eos>", "<bos>"), ids=[1, 2, 105, 106],
        mt="<start_of_turn>user\n", family=None),
    ("meta-llama__Llama-3.3-70B-Instruct", ""): dict(
        kwargs={}, pre="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        post="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", eot="<|eot_id|>",
        stops=("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>"),
        ids=[128000, 128006, 128007, 128009], mt="<|start_header_id|>user<|end_header_id|>\n\n", family="llama-3.1"),
    ("meta-llama__Llama-4-Scout-17B-16E-Instruct", ""): dict(
        kwargs={}, pre="<|begin_of_text|><|header_start|>user<|header_end|>\n\n",
        post="<|eot|><|header_start|>assistant<|header_end|>\n\n", eot="<|eot|>",
        stops=("<|eot|>", "<|header_start|>", "<|header_end|>", "<|begin_of_text|>", "<|eom|>", "<|end_of_text|>"),
        ids=[200000, 200001, 200005, 200006, 200007, 200008], mt="<|header_start|>user<|header_end|>\n\n",
        family="llama-4"),
    ("microsoft__phi-4", ""): dict(
        kwargs={}, pre="<|im_start|>user<|im_sep|>", post="<|im_end|><|im_start|>assistant<|im_sep|>",
        eot="<|im_end|>", stops=("<|im_end|>", "<|im_start|>", "<|im_sep|>", "<|endoftext|>"),
        ids=[100257, 100264, 100265, 100266], mt="<|im_start|>user<|im_sep|>", family=None),
    ("HuggingFaceTB__SmolLM3-3B", "thinking on (default)"): dict(
        kwargs={}, pre="<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: 26 July 2024\n"
        "Reasoning Mode: /think\n\n## Custom Instructions\n\n" + SMOLLM3_THINK + "\n\n<|im_start|>user\n",
        post="<|im_end|>\n<|im_start|>assistant\n", eot="<|im_end|>", stops=("<|im_end|>", "<|im_start|>"),
        ids=[128011, 128012], mt="<|im_start|>user\n", family=None),
    ("HuggingFaceTB__SmolLM3-3B", "thinking off"): dict(
        kwargs={"enable_thinking": False},
        pre="<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: 26 July 2024\n"
        "Reasoning Mode: /no_think\n\n## Custom Instructions\n\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face.\n\n<|im_start|>user\n",
        post="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n", eot="<|im_end|>",
        stops=("<|im_end|>", "<|im_start|>", "<think>", "</think>"), ids=[128002, 128003, 128011, 128012],
        mt="<|im_start|>user\n", family=None),
    ("mistralai__Mistral-Small-3.2-24B-Instruct-2506", ""): dict(
        kwargs={}, pre="<s>[SYSTEM_PROMPT]" + MISTRAL_SMALL_3_2_SYSTEM.format(date="2024-07-26") + "[/SYSTEM_PROMPT][INST]",
        post="[/INST]", eot="</s>", stops=("[/INST]", "</s>", "[INST]", "<s>"), ids=[1, 2, 3, 4], mt="[INST]",
        family=None),
    ("mistralai__Mistral-Small-24B-Instruct-2501", ""): dict(
        kwargs={}, pre="<s>[INST]", post="[/INST]", eot="</s>", stops=("[/INST]", "</s>", "[INST]", "<s>"),
        ids=[1, 2, 3, 4], mt="[INST]", family=None),
    ("deepseek-ai__DeepSeek-R1-Distill-Qwen-1.5B", ""): dict(
        kwargs={}, pre="<｜begin▁of▁sentence｜><｜User｜>", post="<｜Assistant｜><think>\n", eot="<｜end▁of▁sentence｜>",
        stops=("<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "<｜begin▁of▁sentence｜>"), ids=None,
        mt="<｜User｜>", family=None),
    ("allenai__OLMo-2-1124-7B-Instruct", ""): dict(
        kwargs={}, pre="<|endoftext|><|user|>\n", post="\n<|assistant|>\n", eot="<|endoftext|>",
        stops=("<|endoftext|>", "<|user|>", "<|assistant|>"), ids=None, mt="\n<|user|>\n", family=None),
}
CASES = [pytest.param(name, flags, id=f"{name}-{flags}" if flags else name) for name, flags in FAMILIES]
INSTRUCTION = "Plan a three-day trip to Lisbon on a student budget."
ANSWER = "Day 1: Alfama and the castle."


def derived(name: str, flags: str):
    d = fixture(name)
    return d, FAMILIES[name, flags], templates.derive(d["chat_template"], d["bos_token"], d["eos_token"],
                                                      model_id=d["model_id"], template_kwargs=FAMILIES[name, flags]["kwargs"])


@pytest.mark.parametrize("name,flags", CASES)
def test_derivation(name, flags):
    _, want, t = derived(name, flags)
    assert t.pre_query_template == want["pre"]
    assert t.post_query_template == want["post"]
    assert t.end_of_turn == want["eot"]
    assert t.stop_strings == want["stops"]
    assert t.mt_append_template == want["mt"]
    assert t.family == want["family"]
    assert t.template_kwargs == {k: v for k, v in want["kwargs"].items() if k != "template_date"}


@pytest.mark.parametrize("name,flags", [c for c in CASES if FAMILIES[c.values][("ids")] is not None])
def test_stop_ids_from_the_stored_special_tokens(name, flags):
    """The production stop_token_ids, on a tokenizer that holds the model's real special tokens (id -> content from
    its tokenizer_config): every stop string is one token, and the newline stop is none of them."""
    d, want, t = derived(name, flags)
    tok = templates.tokenizer_from_config(d)
    assert templates.stop_token_ids(tok, [*t.stop_strings, "\n"]) == want["ids"]
    assert templates.stop_token_ids(tok, [t.end_of_turn]) == [int(i) for i, c in d["added_tokens"].items()
                                                               if c == t.end_of_turn]
    assert templates.from_tokenizer(tok, d["model_id"], want["kwargs"]) == t


@pytest.mark.parametrize("name,flags", CASES)
def test_round_trip(name, flags):
    """The pre-query template + an instruction + what follows it is the template's own rendering of that instruction
    with the generation prompt; a second turn likewise, from the rendered history."""
    d, want, t = derived(name, flags)
    kw = want["kwargs"]
    user, answer = {"role": "user", "content": INSTRUCTION}, {"role": "assistant", "content": ANSWER}
    rendered = render(d, [user], True, kw)
    if t.family == "llama-3.1":  # the override drops the template's dated system turn (paper App. D.3)
        bos = d["bos_token"]
        system = rendered[len(bos): rendered.index(t.pre_query_template[len(bos):])]
        assert system.startswith("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                                 "2023\nToday Date: 26 Jul 2024\n\n") and system.endswith("<|eot_id|>")
        assert rendered == bos + system + t.pre_query_template[len(bos):] + INSTRUCTION + t.post_query_template
    else:
        assert rendered == t.pre_query_template + INSTRUCTION + t.post_query_template
    second = render(d, [user, answer, {"role": "user", "content": "And on day 2?"}], True, kw)
    prefix = templates.followup_prefix(lambda m, g: render(d, m, g, kw), [user, answer])
    assert second == prefix + "And on day 2?" + t.post_query_template
    history = render(d, [user, answer], False, kw) + t.mt_append_template
    if name in LAST_ANSWER_DIFFERS:  # see test_a_last_answer_ends_otherwise
        assert prefix != history and any("followup_prefix" in n for n in t.notes)
    else:
        assert prefix == history


LAST_ANSWER_DIFFERS = {"openai__gpt-oss-20b", "Qwen__Qwen3-8B"}


def test_a_last_answer_ends_otherwise():
    """gpt-oss ends the last answer of a conversation with <|return|>, an earlier one with <|end|>; Qwen3 gives only
    the last answer an empty <think></think>. A follow-up prompt is cut from the longer rendering (followup_prefix),
    not the history + mt_append_template."""
    user, answer = {"role": "user", "content": INSTRUCTION}, {"role": "assistant", "content": ANSWER}
    d, _, t = derived("openai__gpt-oss-20b", "default reasoning")
    finished = render(d, [user, answer], False)
    assert finished.endswith("<|channel|>final<|message|>" + ANSWER + "<|return|>")
    prefix = templates.followup_prefix(lambda m, g: render(d, m, g), [user, answer])
    assert prefix == finished[: -len("<|return|>")] + t.mt_append_template
    d, _, t = derived("Qwen__Qwen3-8B", "thinking on (default)")
    finished = render(d, [user, answer], False)
    assert finished.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n" + ANSWER + "<|im_end|>\n")
    prefix = templates.followup_prefix(lambda m, g: render(d, m, g), [user, answer])
    assert prefix == finished.replace("<think>\n\n</think>\n\n", "") + t.mt_append_template


@pytest.mark.parametrize("name,flags", CASES)
def test_answers_render_with_the_flags_of_the_pre_query_template(name, flags):
    """What the engines' render_chat calls (apply_chat_template with the role's template kwargs) renders the
    instruction as the pre-query template continues it: answers see the same flags and date."""
    d, want, t = derived(name, flags)
    tok = templates.tokenizer_from_config(d)
    prompt = templates.apply_chat_template(tok, [{"role": "user", "content": INSTRUCTION}], True, want["kwargs"])
    assert prompt == render(d, [{"role": "user", "content": INSTRUCTION}], True, want["kwargs"])
    assert prompt.endswith(t.pre_query_template[len(d["bos_token"] or ""):] + INSTRUCTION + t.post_query_template)


def test_qwen3_thinking_changes_only_what_follows_the_user_turn():
    on, off = (derived("Qwen__Qwen3-8B", f)[2] for f in ("thinking on (default)", "thinking off"))
    assert on.pre_query_template == off.pre_query_template == "<|im_start|>user\n"
    assert off.post_query_template == on.post_query_template + "<think>\n\n</think>\n\n"
    assert off.response_stop_strings == on.response_stop_strings == ("<|im_end|>", "<|im_start|>")


def test_harmony_answers_stop_at_return_not_at_channels():
    """An answer goes analysis<|end|><|start|>assistant<|channel|>final<|message|>...<|return|>: only <|return|> (and
    <|call|>) end it, while <|end|> and <|start|> end an instruction."""
    d, _, t = derived("openai__gpt-oss-20b", "default reasoning")
    tok = templates.tokenizer_from_config(d)
    assert t.response_stop_strings == ("<|return|>", "<|call|>")
    assert templates.stop_token_ids(tok, t.response_stop_strings) == [200002, 200012]
    assert {"<|end|>", "<|start|>"} <= set(t.stop_strings)
    # recognised by its template, whatever the checkpoint is called
    assert templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], model_id="/ckpt/my-finetune").family \
        == "gpt-oss"


def test_gemma3_folds_a_system_prompt_into_the_first_user_turn():
    d = fixture("google__gemma-3-4b-it")
    assert templates.pre_query_with_system(d["chat_template"], "Answer in French.", d["bos_token"], d["eos_token"]) \
        == "<bos><start_of_turn>user\nAnswer in French.\n\n"


# -- the date: fixed by the config, never by the day the run happens -------------------------------------------------
DATED = {  # fixture -> (how its template writes 2025-08-05 into the pre-query template)
    "openai__gpt-oss-20b": "Current date: 2025-08-05\n",
    "HuggingFaceTB__SmolLM3-3B": "Today Date: 05 August 2025\n",
    "mistralai__Mistral-Small-3.2-24B-Instruct-2506": "The current date is 2025-08-05.",
}


class _Clock(datetime.datetime):
    today_is = datetime.datetime(2031, 2, 3)

    @classmethod
    def now(cls, tz=None):
        return cls.today_is


@pytest.mark.parametrize("name", sorted(DATED))
def test_the_date_is_the_configured_one_whatever_today_is(name, monkeypatch):
    """transformers' strftime_now reads the clock: with the clock set to two other days, the template's own rendering
    changes, and the derived templates (and the engines' renders) do not."""
    from transformers.utils import chat_template_utils
    from transformers.utils.chat_template_utils import render_jinja_template

    d = fixture(name)
    user = [{"role": "user", "content": INSTRUCTION}]
    seen = {}
    for day in (datetime.datetime(2031, 2, 3), datetime.datetime(1999, 12, 31)):
        _Clock.today_is = day
        monkeypatch.setattr(chat_template_utils, "datetime", _Clock)
        raw, _ = render_jinja_template(conversations=[user], chat_template=d["chat_template"], add_generation_prompt=True,
                                       bos_token=d["bos_token"] or "", eos_token=d["eos_token"] or "")
        assert str(day.year) in raw[0]  # the template does read today
        fixed = templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"])
        dated = templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"],
                                 {"template_date": "2025-08-05"})
        answer_prompt = templates.apply_chat_template(templates.tokenizer_from_config(d), user, True,
                                                      {"template_date": "2025-08-05"})
        assert answer_prompt == dated.pre_query_template + INSTRUCTION + dated.post_query_template
        for key, text in (("fixed", fixed.pre_query_template), ("dated", dated.pre_query_template)):
            assert str(day.year) not in text
            seen.setdefault(key, set()).add(text)
    assert all(len(texts) == 1 for texts in seen.values())  # the same two pre-query templates on either day
    (fixed,), (dated,) = seen["fixed"], seen["dated"]
    assert DATED[name] in dated and DATED[name] not in fixed and "2024" in fixed
    assert templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"],
                            {"template_date": "2025-08-05"}).template_date == "2025-08-05"


def test_llama3_date_string_follows_template_date():
    """Llama-3.x reads `date_string` (its own default: 26 Jul 2024, the project's default date); a configured date
    reaches the system turn that the answers are rendered with."""
    d = fixture("meta-llama__Llama-3.3-70B-Instruct")
    user = [{"role": "user", "content": INSTRUCTION}]
    assert "Today Date: 26 Jul 2024\n" in render(d, user, True)
    assert "Today Date: 05 Aug 2025\n" in render(d, user, True, {"template_date": "2025-08-05"})
    t = templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"], {"template_date": "2025-08-05"})
    assert t.template_date == "2025-08-05" and t.pre_query_template == FAMILIES[
        "meta-llama__Llama-3.3-70B-Instruct", ""]["pre"]
    with pytest.raises(ValueError, match="template_date"):
        templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], d["model_id"], {"template_date": "soon"})


# -- the role keys: set in YAML, one place, reaching both the derivation and the engine -----------------------------
def test_role_keys_reach_the_engine_and_the_derivation(tmp_path):
    from core.engines import ModelRole
    from synth.config import parse

    cfg = tmp_path / "qwen3.yaml"
    cfg.write_text("model: Qwen/Qwen3-8B\nengine: hf\nenable_thinking: false\ntemplate_date: 2025-08-05\n"
                   "chat_template_kwargs: {reasoning_effort: low}\nresponse_enable_thinking: true\n")
    parsed = parse(["--config", str(cfg)])
    margs = parsed[0]
    rargs = next(p for p in parsed if hasattr(p, "response_role"))
    role = margs.role()
    assert role.template_kwargs() == {"reasoning_effort": "low", "enable_thinking": False, "template_date": "2025-08-05"}
    assert role.engine_kwargs()["template_kwargs"] == role.template_kwargs()
    # the response model inherits the rest of the generator's keys, and sets its own flag
    assert rargs.response_role(role).template_kwargs() == {"reasoning_effort": "low", "enable_thinking": True,
                                                           "template_date": "2025-08-05"}
    assert "template_kwargs" not in ModelRole("Qwen/Qwen3-8B", engine="hf").engine_kwargs()  # unset: as before
    assert hash(role) == hash(role.replace(chat_template_kwargs={"reasoning_effort": "high"}))  # a dict: no hash
    d = fixture("Qwen__Qwen3-8B")
    t = templates.derive(d["chat_template"], None, d["eos_token"], margs.model, role.template_kwargs())
    assert t.post_query_template.endswith("<think>\n\n</think>\n\n")
    with pytest.raises(ValueError, match="disagree"):
        parse(["--config", str(cfg), "--chat_template_kwargs", '{"enable_thinking": true}'])
    with pytest.raises(ValueError, match="template_date"):
        parse(["--config", str(cfg), "--template_date", "2025-02-30"])


def test_template_verb_prints_the_derivation(capsys):
    """`python -m synth template --chat_template_file F`: no model, no network; text and --json."""
    from synth.__main__ import main

    f = str(FIXTURES / "openai__gpt-oss-20b.json")
    assert main(["template", "--model", "openai/gpt-oss-20b", "--chat_template_file", f,
                 "--chat_template_kwargs", '{"reasoning_effort": "low"}']) == 0
    out = capsys.readouterr().out
    assert "override             gpt-oss" in out and "'<|return|>'" in out and "reasoning_effort='low'" in out
    assert "ids [200002, 200012]" in out and "2024-07-26 (template_date)" in out
    assert main(["template", "--model", "openai/gpt-oss-20b", "--chat_template_file", f, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["pre_query_template"] == FAMILIES["openai__gpt-oss-20b", "default reasoning"]["pre"]
    assert got["end_of_turn"] == "<|return|>" and got["response_stop_ids"] == [200002, 200012]
    assert got["instruction_stops"][-1] == "\n" and got["template_date"] == "2024-07-26"
