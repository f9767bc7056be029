"""Reasoning models as generators and responders (core/reasoning.py): their answers cut into thinking and answer, the
thinking kept in `reasoning`, their cards' sampling, the multi-turn follow-up of gpt-oss and Qwen3, the step-1 drop of
a sample that thinks instead of asking, and the column through responses -> tag -> filter -> export.

Parsing is checked on the families' real templates (tests/fixtures/chat_templates): a conversation with reasoning is
rendered through the template and the answer part parsed back, and TRL's own response parser (trl.chat_template_utils,
for the templates it knows) must read the same. Everything that generates uses the embedded SmolLM2-135M-Instruct, with
a test template that opens a <think> block in the generation prompt (tests/fixtures/test_templates).
"""
import json
from pathlib import Path

import pytest

from core import reasoning, store, templates
from core.answer import resolve_sampling
from core.config import ResponseArgs
from core.engines import Completion, Engine, cut_at_stop
from core.engines.base import EngineInfo

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/chat_templates"
THINK_TEMPLATE = str(ROOT / "tests/fixtures/test_templates/smollm2_think_prefill.jinja")
TINY = "embedded:smollm2-135m-instruct"
REASONING, ANSWER, QUESTION = "First 17 * 3 = 51.\nThen 51 + 4 = 55.", "The result is 55.", "What is 17 * 3 + 4?"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def derived(name: str, kw: dict | None = None, model: str | None = None) -> tuple[dict, templates.Template]:
    d = fixture(name)
    return d, templates.derive(d["chat_template"], d["bos_token"], d["eos_token"], model or d["model_id"], kw)


def render(d: dict, messages: list[dict], gen: bool, kw: dict | None = None) -> str:
    return templates._render(d["chat_template"], messages, gen, d["bos_token"], d["eos_token"], kw)


def model_output(d: dict, t: templates.Template, reply: dict, kw: dict | None = None) -> str:
    """What the model writes for `reply`, as the template itself renders it: the rendering of the finished conversation
    after the generation prompt, up to the stop string that ends an answer (the engine leaves it out)."""
    user = {"role": "user", "content": QUESTION}
    full, prompt = render(d, [user, reply], False, kw), render(d, [user], True, kw)
    assert full.startswith(prompt)
    return cut_at_stop(full[len(prompt):], [*t.response_stop_strings, d["eos_token"]])[0]


def trl_parse(d: dict, text: str, prompt: str) -> dict:
    """TRL's reading of an answer (its response template for this chat template; transformers' parse_response)."""
    from trl.chat_template_utils import add_response_schema

    tok = add_response_schema(templates.tokenizer_from_config({**d, "added_tokens": d.get("added_tokens", {})}))
    return tok.parse_response(text, prefix=prompt)


# -- the families' formats ----------------------------------------------------------------------------------------
def test_qwen3_thinking_round_trips_through_its_template_and_agrees_with_trl():
    d, t = derived("Qwen__Qwen3-8B")
    assert (t.reasoning_format, reasoning.thinks(t), reasoning.opened(t.post_query_template)) == ("think", True, False)
    text = model_output(d, t, {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING})
    assert text.startswith("<think>\n")
    assert reasoning.split(text, t) == reasoning.Split(REASONING, ANSWER, True)
    prompt = render(d, [{"role": "user", "content": QUESTION}], True)
    trl = trl_parse(d, text, prompt)
    assert (trl["reasoning_content"], trl["content"]) == (REASONING, ANSWER)


def test_qwen3_without_thinking_has_no_reasoning():
    _, t = derived("Qwen__Qwen3-8B", {"enable_thinking": False})
    assert t.reasoning_format == "think" and not reasoning.thinks(t)
    assert reasoning.split(ANSWER, t) == reasoning.Split(None, ANSWER, True)


def test_gpt_oss_channels_round_trip_and_agree_with_trl():
    d, t = derived("openai__gpt-oss-20b")
    assert (t.reasoning_format, reasoning.thinks(t)) == ("harmony", True)
    text = model_output(d, t, {"role": "assistant", "content": ANSWER, "thinking": REASONING})
    assert text == f"<|channel|>analysis<|message|>{REASONING}<|end|><|start|>assistant<|channel|>final<|message|>{ANSWER}"
    assert reasoning.split(text, t) == reasoning.Split(REASONING, ANSWER, True)
    trl = trl_parse(d, text + "<|return|>", render(d, [{"role": "user", "content": QUESTION}], True))
    assert (trl["thinking"], trl["content"]) == (REASONING, ANSWER)
    # cut inside the analysis channel (max_tokens): no answer, and said so
    assert reasoning.split("<|channel|>analysis<|message|>We need to multiply", t) == reasoning.Split(
        "We need to multiply", "", False)
    # a server that dropped the special tokens leaves the channel names glued to the text
    assert reasoning.split(f"analysis{REASONING}assistantfinal{ANSWER}", t) == reasoning.Split(REASONING, ANSWER, True)


def test_deepseek_r1_distills_answer_inside_the_prefilled_think():
    d, t = derived("deepseek-ai__DeepSeek-R1-Distill-Qwen-1.5B")
    prompt = render(d, [{"role": "user", "content": QUESTION}], True)
    assert prompt.endswith("<｜Assistant｜><think>\n") and reasoning.opened(t.post_query_template)
    text = f"{REASONING}\n</think>\n\n{ANSWER}"  # the documented output: the template opened the block
    assert reasoning.split(text, t) == reasoning.Split(REASONING, ANSWER, True)
    trl = trl_parse(d, text, prompt)
    assert (trl["reasoning_content"], trl["content"]) == (REASONING, ANSWER)
    assert reasoning.split("Let me think about 17 * 3", t) == reasoning.Split("Let me think about 17 * 3", "", False)
    # the template renders a finished conversation without the thinking (it keeps what follows </think>)
    assert ANSWER in render(d, [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": text}], False)


def test_smollm3_thinks_unless_told_not_to():
    _, t = derived("HuggingFaceTB__SmolLM3-3B")
    assert reasoning.thinks(t) and not reasoning.opened(t.post_query_template)
    assert reasoning.split(f"<think>\n{REASONING}\n</think>\n{ANSWER}", t) == reasoning.Split(REASONING, ANSWER, True)
    _, off = derived("HuggingFaceTB__SmolLM3-3B", {"enable_thinking": False})
    assert not reasoning.thinks(off)


def test_families_without_reasoning_keep_their_text():
    _, t = derived("meta-llama__Meta-Llama-3-8B-Instruct")
    assert t.reasoning_format is None and not reasoning.thinks(t)
    text = "  An answer that mentions </think> in passing.  "
    assert reasoning.split(text, t) == reasoning.Split(None, text.strip(), True)


def test_a_servers_parsed_reasoning_is_taken_as_it_is():
    _, t = derived("Qwen__Qwen3-8B")
    c = Completion(ANSWER, 10, "stop", reasoning=REASONING)
    assert reasoning.split_completion(c, t) == reasoning.Split(REASONING, ANSWER, True)


def test_keep_reasoning_puts_it_back_as_trl_reads_it():
    parts = reasoning.Split(REASONING, ANSWER, True)
    assert reasoning.message("assistant", ANSWER, parts) == {"role": "assistant", "content": ANSWER}
    kept = reasoning.message("assistant", ANSWER, parts, keep_reasoning=True)
    assert kept == {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    d, _ = derived("Qwen__Qwen3-8B")  # Qwen3's template (TRL's training copy too) reads reasoning_content
    assert f"<think>\n{REASONING}\n</think>\n\n{ANSWER}" in render(d, [{"role": "user", "content": QUESTION}, kept], False)


# -- sampling from the cards ----------------------------------------------------------------------------------------
def test_thinking_models_sample_as_their_cards_say_unless_the_config_says_otherwise():
    unset = ResponseArgs()
    _, qwen3 = derived("Qwen__Qwen3-8B")
    values, note = resolve_sampling(unset, "Qwen/Qwen3-8B", qwen3)
    assert values == {"temperature": 0.6, "top_p": 0.95, "top_k": 20} and "huggingface.co/Qwen/Qwen3-8B" in note
    _, off = derived("Qwen__Qwen3-8B", {"enable_thinking": False})
    assert resolve_sampling(unset, "Qwen/Qwen3-8B", off) == ({"temperature": 0.0, "top_p": 1.0, "top_k": 0}, None)
    _, oss = derived("openai__gpt-oss-20b")
    assert resolve_sampling(unset, "openai/gpt-oss-20b", oss)[0] == {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
    _, r1 = derived("deepseek-ai__DeepSeek-R1-Distill-Qwen-1.5B")
    assert resolve_sampling(unset, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", r1)[0] == {
        "temperature": 0.6, "top_p": 0.95, "top_k": 0}
    # a key the config sets wins, and nothing else is filled in for it
    assert resolve_sampling(ResponseArgs(response_temperature=0.0), "Qwen/Qwen3-8B", qwen3) == (
        {"temperature": 0.0, "top_p": 1.0, "top_k": 0}, None)
    # a thinking template whose card is unknown stays greedy, and the log says why that is a risk
    values, note = resolve_sampling(unset, "someone/thinker", qwen3)
    assert values["temperature"] == 0.0 and "card's sampling is not known" in note
    _, llama = derived("meta-llama__Meta-Llama-3-8B-Instruct")  # the paper's models: greedy, as before
    assert resolve_sampling(unset, "meta-llama/Meta-Llama-3-8B-Instruct", llama) == (
        {"temperature": 0.0, "top_p": 1.0, "top_k": 0}, None)


def test_top_k_one_samples_only_the_likeliest_tokens(hf_engine):
    """top_k 1 at a hot temperature draws, at every step, a token of the step's highest logit (the raw logits of the
    same run, as Sampling.logprobs returns them). Not always greedy's text: bf16 logits tie at the top (a step of
    0.125 at 20), and top_k keeps every token tied with the k-th, as vLLM's and transformers' do."""
    from core.engines import Sampling

    prompt = hf_engine.render_chat([{"role": "user", "content": "Name a colour."}])
    for seed in (3, 4):
        c = hf_engine.complete([prompt], Sampling(temperature=1.5, top_k=1, max_tokens=8, seed=seed, logprobs=4))[0][0]
        best = [[t for t, v in step.items() if v == max(step.values())] for step in c.top_logprobs]
        assert len(best) == c.num_tokens > 0

        def spells(i: int, text: str) -> bool:  # the text is one best token per step (a stop token, cut, may end it)
            if not text:
                return True
            return i < len(best) and any(text.startswith(t) and spells(i + 1, text[len(t):]) for t in best[i])

        assert spells(0, c.text), (c.text, best)


# -- multi-turn -----------------------------------------------------------------------------------------------------
class TemplateEngine(Engine):
    """An engine that only renders (a fixture's chat template through its stored special tokens): the follow-up prompt
    is text the template makes, nothing is generated."""

    def __init__(self, d: dict, kw: dict | None = None):
        self.tokenizer = templates.tokenizer_from_config(d)
        self.template_kwargs, self.info = kw, EngineInfo("render-only", d["model_id"])

    def complete(self, prompts, sampling):
        raise AssertionError("nothing is generated here")


@pytest.mark.parametrize("name,kw", [("openai__gpt-oss-20b", {}), ("Qwen__Qwen3-8B", {}),
                                     ("Qwen__Qwen3-8B", {"enable_thinking": False})])
def test_followup_prompt_of_gpt_oss_and_qwen3_is_the_templates_own_rendering(name, kw):
    from synth.config import REFERENCE_MT_SYSTEM_PROMPT
    from synth.multiturn import followup_prompt

    d, t = derived(name, kw)
    assert t.followup_by_prefix
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    system = [{"role": "system", "content": REFERENCE_MT_SYSTEM_PROMPT}]
    own = render(d, [*system, *history, {"role": "user", "content": "NEXT"}], False, kw)
    prompt = followup_prompt(TemplateEngine(d, kw), t, history, REFERENCE_MT_SYSTEM_PROMPT)
    assert prompt == own[: own.index("NEXT")]
    assert prompt != render(d, [*system, *history], False, kw) + t.mt_append_template  # the old way was wrong here


@pytest.mark.parametrize("name", ["meta-llama__Meta-Llama-3-8B-Instruct", "HuggingFaceTB__SmolLM2-135M-Instruct",
                                  "Qwen__Qwen2.5-7B-Instruct"])
def test_followup_prompt_of_the_older_families_is_unchanged(name):
    from synth.multiturn import followup_prompt

    d, t = derived(name)
    assert not t.followup_by_prefix
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    assert followup_prompt(TemplateEngine(d), t, history, None) == render(d, history, False) + t.mt_append_template


# -- step 1: a model that thinks where a request belongs ---------------------------------------------------------
def test_thinking_instead_of_asking_is_dropped_by_name():
    from synth import sanitize

    assert sanitize.check("<think>\nThe user wants", "stop") == "thinking_instead"
    assert sanitize.check("Okay, let me see.</think>What is 2 + 2?", "stop") == "thinking_instead"
    assert sanitize.check("<|channel|>analysis<|message|>We need", "stop") == "thinking_instead"
    assert sanitize.check("How do I write a <think> tag in HTML?", "stop") == "thinking_instead"  # rare; counted
    assert sanitize.check("How do I bake bread?", "stop") is None


def test_step1_keeps_think_tags_out_of_the_stop_strings():
    """Qwen3 without thinking renders <think></think> after the user turn, so derive() stops instructions there; step 1
    lets the text show it instead, so that a sample that thinks is counted as thinking_instead, not cut to a stub."""
    from core.config import ModelArgs
    from synth.config import InstructionArgs
    from synth.instructions import resolve_template

    d, t = derived("Qwen__Qwen3-8B", {"enable_thinking": False})
    assert "<think>" in t.stop_strings
    margs = ModelArgs(model="Qwen/Qwen3-8B", engine="hf", enable_thinking=False)
    _, stops = resolve_template(TemplateEngine(d, margs.role().template_kwargs()), margs, InstructionArgs())
    assert "<think>" not in stops and "</think>" not in stops and "<|im_end|>" in stops and "\n" in stops


def test_a_generated_sample_that_thinks_is_counted(tmp_path):
    """Step 1 for real: a prefill stub `<think>` makes every sample begin as a thinking one."""
    from synth.__main__ import main

    out = tmp_path / "run"
    argv = ["instructions", "--config", str(ROOT / "recipes/configs/synth/tiny.yaml"), "--output_dir", str(out),
            "--mix", "single", "--total_prompts", "4", "--n", "4", "--max_tokens", "8", "--engine", "hf",
            "--prefill", "<think>", "--report_to", "none"]
    assert main(argv) == 0
    m = store.DatasetDir(out / "instructions").manifest()
    dropped = m["counts"]["dropped"]
    assert dropped["thinking_instead"] + dropped["empty"] == 4 and dropped["thinking_instead"] >= 1
    assert m["counts"]["kept"] == 0


# -- the column through the pipeline ----------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> None:
    from synth.__main__ import main

    assert main(argv) == 0


REASONING_V2 = str(ROOT / "recipes/configs/synth/reasoning-v2.yaml")
# reasoning-v2.yaml scaled to the embedded model: its generator and responder, lengths and counts; the responder gets
# the test template that opens <think>; tagging is the language and the neighbours (the 8B judges cannot load here).
TINY_V2 = ["--model", TINY, "--engine", "hf", "--dtype", "auto", "--tensor_parallel_size", "1",
           "--response_model", TINY, "--response_engine", "hf", "--response_tensor_parallel_size", "1",
           "--response_max_model_len", "2048", "--response_chat_template", THINK_TEMPLATE,
           "--total_prompts", "4", "--n", "4", "--max_tokens", "32", "--response_max_tokens", "16",
           "--response_batch_size", "8", "--hf_batch_size", "8", "--rounds_per_shard", "1",
           "--taggers", "language", "min_neighbor_distance", "--embedding_model", "embedded:all-minilm-l6-v2",
           "--tag_batch_size", "8", "--report_to", "none"]


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2")
    # the filter of reasoning-v2.yaml keeps closed thinking only, which a 135M model rarely writes in 16 tokens: the
    # run keeps all rows (a reasoning_length condition, on the derived column) and the preset is applied below
    run_cli(["run", "--config", REASONING_V2, "--output_dir", str(out), *TINY_V2, "--stages", "instructions",
             "responses", "tag", "filter", "export", "--filter_preset", "raw-300k",
             "--filter_expression", "reasoning_length >= 0"])
    return out


def test_reasoning_v2_recipe_answers_with_reasoning_kept_apart(v2_run):
    ds = store.DatasetDir(v2_run / "responses")
    m = ds.manifest()
    assert m["reasoning_format"] == "think" and m["model"] == TINY
    assert m["sampling"]["temperature"] == 0.0  # no card for the embedded model: greedy, and the log said why
    rows = ds.records()
    assert rows, "no instruction survived step 1"
    for r in rows:
        answer = r["messages"][-1]
        assert answer == {"role": "assistant", "content": r["response"]}  # the answer alone, no reasoning_content
        assert isinstance(r["reasoning"], str) and "</think>" not in r["reasoning"]
        if not r["reasoning_closed"]:
            assert r["response"] == ""  # the thinking ran to max_tokens: there is no answer
    counts = m["counts"]
    assert counts["reasoning"] == len(rows) and counts["reasoning_unclosed"] == sum(not r["reasoning_closed"]
                                                                                    for r in rows)


def test_reasoning_reaches_the_filter_the_stats_and_the_export(v2_run):
    import datasets

    from synth import filters
    from synth.stats import Profile

    tagged = store.DatasetDir(v2_run / "tagged").records()
    assert all("reasoning" in r and "min_neighbor_distance" in r for r in tagged)
    kept, funnel = filters.apply(tagged, "reasoning-closed")
    assert [r["id"] for r in kept] == [r["id"] for r in tagged if r["reasoning_closed"]
                                       and r["min_neighbor_distance"] > 0]
    assert funnel[1] == ("reasoning_closed", sum(r["reasoning_closed"] for r in tagged))
    long_ones, _ = filters.apply(tagged, "reasoning_length > 20")
    assert [r["id"] for r in long_ones] == [r["id"] for r in tagged if len(r["reasoning"]) > 20]
    profile = Profile.of(v2_run / "tagged")
    assert sorted(profile.values("reasoning_length")) == sorted(float(len(r["reasoning"])) for r in tagged)
    assert profile.reasoning_unclosed == sum(not r["reasoning_closed"] for r in tagged)
    export = datasets.load_dataset("parquet", data_dir=str(v2_run / "export/data"), split="train")
    assert {"reasoning", "reasoning_closed"} <= set(export.column_names)
    assert all(set(m) == {"role", "content"} for row in export["messages"] for m in row)
    card = (v2_run / "export/README.md").read_text()
    assert "reasoning_chars" in card


def test_keep_reasoning_writes_it_into_messages(v2_run, tmp_path):
    import shutil

    shutil.copytree(v2_run / "instructions", tmp_path / "instructions")
    run_cli(["responses", "--config", REASONING_V2, "--output_dir", str(tmp_path), *TINY_V2, "--keep_reasoning",
             "true"])
    for r in store.DatasetDir(tmp_path / "responses").records():
        assert r["messages"][-1] == {"role": "assistant", "content": r["response"], "reasoning_content": r["reasoning"]}


def test_multiturn_keeps_each_turns_reasoning_out_of_the_history(v2_run, tmp_path):
    """Multi-turn on the thinking template (the generator answers every turn, so it gets the template too)."""
    import shutil

    shutil.copytree(v2_run / "responses", tmp_path / "responses")
    shutil.copytree(v2_run / "instructions", tmp_path / "instructions")
    # multiturn answers with the generator: the response keys of TINY_V2 are the generator's own here
    run_cli(["multiturn", "--config", REASONING_V2, "--output_dir", str(tmp_path), *TINY_V2, "--chat_template",
             THINK_TEMPLATE, "--max_model_len", "2048", "--mt_max_tokens", "16", "--mt_batch_size", "8"])
    rows = store.DatasetDir(tmp_path / "multiturn").records()
    m = store.DatasetDir(tmp_path / "multiturn").manifest()
    assert "reasoning_unclosed" in m["counts"]
    for r in rows:
        assert all(set(x) == {"role", "content"} for x in r["messages"][2:])
        assert r["messages"][3]["content"] == r["response_2"] and "reasoning_2" in r


def test_a_servers_reasoning_field_is_read_from_the_chat_answer():
    """vLLM's --reasoning-parser hands the thinking over beside the content (`reasoning_content`, newer: `reasoning`)."""
    from openai.types.chat import ChatCompletion

    from core.engines.openai import _reasoning_of

    for key in ("reasoning_content", "reasoning"):
        resp = ChatCompletion.model_validate({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER, key: REASONING}}]})
        assert _reasoning_of(resp.choices[0]) == REASONING
    plain = ChatCompletion.model_validate({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}]})
    assert _reasoning_of(plain.choices[0]) is None


def test_preference_samples_are_answers_with_their_reasoning_apart(tmp_path):
    """The preference stage's k samples through the thinking template (a role's chat_template, as the registry builds
    it): each sample is its answer alone, the thinking in `reasonings`."""
    from core.answer import answer_template, chat_sampling
    from core.engines import get_engine
    from synth.preferences import sample_shard

    src = store.DatasetDir(tmp_path / "prompts")
    src.begin("preference_prompts", {"t": 1})
    src.write_shard(0, [{"id": 0, "instruction": "Name a prime number."}, {"id": 1, "instruction": "Say hello."}],
                    {"kept": 2})
    src.finish({"kept": 2})
    engine = get_engine("hf", model=TINY, chat_template=THINK_TEMPLATE, batch_size=8)
    try:
        assert "<think>" in engine.render_chat([{"role": "user", "content": "x"}])
        tpl = answer_template(engine, TINY)
        sampling = chat_sampling(engine, TINY, tpl, n=2, temperature=1.0, max_tokens=8, seed=0)
        records, meta = sample_shard(engine, (0, 2), str(src.path), ["id", "instruction"], sampling, {}, tpl)
    finally:
        engine.close()
    empty = sum(a == "" for rec in records for a in rec["responses"])
    assert meta["samples"] == 4 and meta["empty"] == empty and meta["reasoning_unclosed"] <= empty  # unclosed: no answer
    for rec in records:
        assert len(rec["reasonings"]) == len(rec["responses"]) == 2
        assert all(r is not None and "</think>" not in r for r in rec["reasonings"])
