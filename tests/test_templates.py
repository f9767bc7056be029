"""Pre-query templates derived from real chat templates equal the reference's values."""
import json
from pathlib import Path

import pytest

from core import templates

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"

# From the reference repo's configs/model_configs.json (magpie-align/magpie). Phi-3 4k and Yi 6B
# share their family's template with the 128k / 34B entries the reference lists.
REFERENCE = {
    "meta-llama/Meta-Llama-3-8B-Instruct": {
        "pre_query_template": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        "mt_append_template": "<|start_header_id|>user<|end_header_id|>\n\n",
        "stops": ["<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"],
    },
    "meta-llama/Llama-3.1-8B-Instruct": {
        "pre_query_template": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        "mt_append_template": "<|start_header_id|>user<|end_header_id|>\n\n",
        "stops": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
        "newline_stop": False,
    },
    "Qwen/Qwen2-7B-Instruct": {"pre_query_template": "<|im_start|>user\n", "stops": ["<|im_start|>", "<|im_end|>"]},
    "Qwen/Qwen2.5-7B-Instruct": {
        "pre_query_template": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\n",
        "stops": ["<|im_start|>", "<|im_end|>"],
    },
    "google/gemma-2-9b-it": {"pre_query_template": "<bos><start_of_turn>user\n\n",
                             "stops": ["<eos>", "<bos>", "<end_of_turn>"], "newline_stop": False},
    "mistralai/Mistral-7B-Instruct-v0.3": {"pre_query_template": "<s> [INST] ",
                                           "stops": ["<s>", "</s>", "[INST]", "[/INST]"]},
    "microsoft/Phi-3-mini-4k-instruct": {"pre_query_template": "<s> <|user|>\n",
                                         "stops": ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]},
    "01-ai/Yi-1.5-6B-Chat": {"pre_query_template": "<|im_start|>user\n", "stops": ["<|startoftext|>", "<|im_end|>"]},
}


def load(model_id):
    f = FIXTURES / (model_id.replace("/", "__") + ".json")
    d = json.loads(f.read_text())
    return d["chat_template"], d["bos_token"], d["eos_token"]


@pytest.mark.parametrize("model_id", sorted(REFERENCE))
def test_derived_equals_reference(model_id):
    ref = REFERENCE[model_id]
    t = templates.derive(*load(model_id), model_id=model_id)
    assert t.pre_query_template == ref["pre_query_template"]
    if "mt_append_template" in ref:
        assert t.mt_append_template == ref["mt_append_template"]
    assert set(ref["stops"]) <= set(t.stop_strings)
    assert t.newline_stop == ref.get("newline_stop", True)


@pytest.mark.parametrize("model_id", ["meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2-7B-Instruct",
                                      "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"])
def test_families_recognised_without_model_id(model_id):
    """The public entry `derive(chat_template, bos, eos)` needs no model id for these families."""
    t = templates.derive(*load(model_id))
    assert t.pre_query_template == REFERENCE[model_id]["pre_query_template"]


def test_pre_query_is_prefix_of_rendered_user_turn():
    """Whatever the family, an instruction appended to the (unoverridden) template renders as a user turn."""
    for f in FIXTURES.glob("*.json"):
        d = json.loads(f.read_text())
        t = templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], model_id="unlisted/model")
        rendered = templates._render(d["chat_template"], [{"role": "user", "content": "Hi there"}], False,
                                     d["bos_token"], d["eos_token"])
        assert rendered.startswith(t.pre_query_template + "Hi there"), f.name
        assert "MAGPIE" not in "".join(t.stop_strings) + t.mt_append_template


def test_smollm2_real_tokenizer(smol_tokenizer):
    t = templates.from_tokenizer(smol_tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct")
    # SmolLM2's template injects its default system turn, like Qwen2.5's; kept as the reference keeps Qwen2.5's.
    assert t.pre_query_template.endswith("<|im_start|>user\n")
    assert t.pre_query_template.startswith("<|im_start|>system\n")
    assert t.mt_append_template == "<|im_start|>user\n"
    assert set(templates.stop_token_ids(smol_tokenizer, t.stop_strings)) == {
        smol_tokenizer.convert_tokens_to_ids("<|im_end|>"), smol_tokenizer.convert_tokens_to_ids("<|im_start|>")}


def test_no_chat_template_says_what_to_do():
    with pytest.raises(templates.NoChatTemplate, match="--pre-query-template"):
        templates.derive(None, model_id="gpt2")
    with pytest.raises(templates.NoChatTemplate, match="--pre-query-template"):
        templates.derive("", model_id="gpt2")


def test_model_without_chat_template_needs_pre_query_template(hf_engine):
    import copy

    from core.config import ModelArgs
    from synth.config import InstructionArgs
    from synth.instructions import resolve_template

    engine = copy.copy(hf_engine)
    engine.tokenizer = copy.deepcopy(hf_engine.tokenizer)
    engine.tokenizer.chat_template = None
    with pytest.raises(templates.NoChatTemplate, match="--pre-query-template"):
        resolve_template(engine, ModelArgs(model="some/base-model"), InstructionArgs())
    tpl, stops = resolve_template(engine, ModelArgs(model="some/base-model", pre_query_template="User: "),
                                  InstructionArgs())
    assert tpl.pre_query_template == "User: "
    assert "\n" in stops and engine.tokenizer.eos_token in stops


def test_control_system_prompts(hf_engine):

    from core.config import ModelArgs
    from synth import control
    from synth.config import InstructionArgs
    from synth.instructions import resolve_template

    margs = ModelArgs(model="HuggingFaceTB/SmolLM2-135M-Instruct")
    tpl, stops = resolve_template(hf_engine, margs, InstructionArgs(control="math"))
    assert tpl.pre_query_template.startswith("<|im_start|>system\n" + control.CONTROL_PROMPTS["math"])
    assert tpl.pre_query_template.endswith("<|im_end|>\n<|im_start|>user\n") and "\n" in stops
    tpl, stops = resolve_template(hf_engine, margs, InstructionArgs(control="translation"))
    assert "\n" not in stops and tpl.sanitize  # the reference runs translation without the newline stop
    tpl, _ = resolve_template(hf_engine, margs, InstructionArgs(control="language:French"))
    assert "writes every message in French" in tpl.pre_query_template
    tpl, _ = resolve_template(hf_engine, margs, InstructionArgs(control="math", system_prompt="Be a pirate."))
    assert "Be a pirate." in tpl.pre_query_template and "mathematics" not in tpl.pre_query_template
    with pytest.raises(ValueError, match="unknown control"):
        resolve_template(hf_engine, margs, InstructionArgs(control="poetry"))
    gemma = json.loads((FIXTURES / "google__gemma-2-9b-it.json").read_text())
    with pytest.raises(ValueError, match="system"):
        templates.pre_query_with_system(gemma["chat_template"], "Be brief.", gemma["bos_token"])
