"""Taggers on the real embedded SmolLM2 (judges, guard, reward stand-in) and real lingua.

The small model's labels are noisy, so model tests check the contract (fields, canonical labels
or None, counted failures) rather than particular labels; the parser is tested on hand-written
broken judge outputs.
"""
import math

import pytest

from synth.taggers import get_tagger, tagger_names
from synth.taggers.guard import normalize_stand_in
from synth.engines import shared_engine
from synth.schema import DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES
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
    t = get_tagger("reward_difference", reward_model=TINY, base_model=TINY, base_engine="hf",
                   engine=hf_engine, base_max_tokens=32)
    scored = dict(RECORDS[0], instruct_reward=-1.5, reward_model=STAND_IN_LABEL)
    out = t.tag([RECORDS[2], scored])
    for o in out:
        assert isinstance(o["base_response"], str) and o["base_response"]
        assert "### User" not in o["base_response"]  # stopped at the next turn
        assert math.isfinite(o["base_reward"]) and math.isfinite(o["reward_difference"])
    assert out[1]["reward_difference"] == pytest.approx(-1.5 - out[1]["base_reward"])
    assert t.stats["reused_instruct_reward"] == 1
    assert "base model" in t.info()["stand_in"]


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
