"""LLM-judge taggers: task category, difficulty and input quality of an instruction.

Paper section 4 / the reference's `unitag.py`: Llama-3-8B-Instruct reads the instruction only
(never the response), greedy, max 1024 tokens, with its reply prefilled with `{` and stopped at
the first `}`, so that the judge writes one flat JSON object. The prompts are our own words; the
JSON keys and label sets are the reference's, so that tags stay comparable with the released
datasets. A judge that writes something unreadable leaves the record untagged (the reference
does the same); we count it and never fail the run.
"""
from __future__ import annotations

import ast
import json
import re
from typing import ClassVar

from core.engines import Sampling
from core.schema import DIFFICULTY_LEVELS, QUALITY_LEVELS, TASK_CATEGORIES

from . import Tagger, register_tagger, tagger_engine

PAPER_JUDGE = "meta-llama/Meta-Llama-3-8B-Instruct"
STAND_IN_NOTE = "SmolLM2-135M-Instruct judges in place of Llama-3-8B-Instruct; its labels are noisy."

# ---------------------------------------------------------------------------------------------
# Prompts (ours). Each shows the exact JSON shape; the reply is prefilled with "{". The label
# placeholder is "<your rating>" followed by the allowed values on their own line: with the values
# inside the placeholder, SmolLM2 copied the whole list (0 of 16 labelled; 16 of 16 after).

CLASSIFICATION_PROMPT = """You are sorting user requests to an AI assistant by the kind of task they ask for.

The user's request is between the two lines of dashes:
----------
{instruction}
----------

Pick the one category below that fits the request best, then list any other categories that also apply.
- Information seeking: asks for facts or explanations about some topic.
- Reasoning: needs logic, deduction or working through a complex problem.
- Planning: wants a plan, schedule or strategy for an activity or project.
- Editing: wants existing text rewritten, shortened, corrected or proofread.
- Coding & Debugging: wants code written, explained, reviewed or fixed.
- Math: a mathematical problem, calculation or concept.
- Role playing: asks the assistant to act as a character or persona.
- Data analysis: wants data, numbers or statistics interpreted or processed.
- Creative writing: wants a story, poem, script or other creative text.
- Advice seeking: wants recommendations or guidance on a personal or professional matter.
- Brainstorming: wants ideas or possibilities generated.
- Others: fits none of the categories above.

Write the category names exactly as above. Answer with JSON only, in this shape:
{{"primary_tag": "<the best category>", "other_tags": ["<another category>", ...]}}"""

DIFFICULTY_PROMPT = """Judge how hard the user request below is for an AI assistant to answer well.

The user's request is between the two lines of dashes:
----------
{instruction}
----------

First state what the user wants and what knowledge a good answer needs. Then rate the difficulty as one of: very easy, easy, medium, hard, very hard.

Answer with JSON only, in this shape:
{{"intent": "The user wants to ...", "knowledge": "To answer, one needs to know ...", "difficulty": "<your rating>"}}
For the rating write exactly one of: very easy, easy, medium, hard, very hard."""

QUALITY_PROMPT = """Rate how well the user request below is written: is it clear, specific and coherent, and does it give the context needed to answer it?

- very poor: unclear, vague or incoherent; essential information is missing.
- poor: partly unclear or missing important details; it needs a lot of clarification.
- average: fairly clear and specific, but some information would have to be asked for.
- good: clear and specific, with enough context to see what the user wants.
- excellent: very clear, specific and well put; everything a full answer needs is there.

The user's request is between the two lines of dashes:
----------
{instruction}
----------

Give a short assessment of the request's strengths and weaknesses, then the rating. Answer with JSON only, in this shape:
{{"explanation": "<your assessment>", "input_quality": "<your rating>"}}
For the rating write exactly one of: very poor, poor, average, good, excellent."""

# ---------------------------------------------------------------------------------------------
# Reading what the judge wrote.

_FENCE = re.compile(r"```[a-zA-Z]*")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_judge_json(text: str, keys: tuple[str, ...] = ()) -> dict | None:
    """The first JSON object in `text`, forgiving the ways small judges break it.

    Handles markdown fences, text before or after the object, Python-style single quotes,
    trailing commas and a missing closing brace. As a last resort, pulls `"key": "value"` (or a
    list) for each of `keys` out of otherwise broken text. None when nothing can be read.
    """
    if not isinstance(text, str):
        return None
    s = _FENCE.sub("", text)
    start = s.find("{")
    if start >= 0:
        body = s[start:]
        for candidate in (body, _TRAILING_COMMA.sub(r"\1", body)):
            for attempt in (candidate, candidate.rstrip().rstrip(",") + "}"):
                obj = _decode_first_object(attempt)
                if obj is not None:
                    return obj
    return _salvage_keys(s, keys)


def _decode_first_object(s: str) -> dict | None:
    try:
        obj, _ = json.JSONDecoder().raw_decode(s)  # ignores whatever follows the object
    except ValueError:
        # {'primary_tag': 'Math'}: Python literal syntax, which json refuses.
        end = s.find("}")
        try:
            obj = ast.literal_eval(s[: end + 1]) if end >= 0 else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


def _salvage_keys(s: str, keys: tuple[str, ...]) -> dict | None:
    found = {}
    for key in keys:
        m = re.search(rf"""["']?{re.escape(key)}["']?\s*:\s*(?:"([^"]*)"|'([^']*)'|\[([^\]]*)\])""", s)
        if m is None:
            continue
        if m.group(3) is not None:
            found[key] = [x.strip().strip("\"'") for x in m.group(3).split(",") if x.strip()]
        else:
            found[key] = m.group(1) if m.group(1) is not None else m.group(2)
    return found or None


def _norm(s: str) -> str:
    s = s.lower().replace("&", " and ").replace("-", " ").replace("_", " ")
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", s).split())


# A lone word that names one category unambiguously ("Coding", "mathematics").
_CATEGORY_WORDS = {
    "information": "Information seeking", "reasoning": "Reasoning", "planning": "Planning",
    "editing": "Editing", "coding": "Coding & Debugging", "debugging": "Coding & Debugging",
    "code": "Coding & Debugging", "math": "Math", "mathematics": "Math",
    "roleplay": "Role playing", "roleplaying": "Role playing", "creative": "Creative writing",
    "advice": "Advice seeking", "brainstorming": "Brainstorming", "other": "Others", "others": "Others",
}


def canonical_label(value, labels: tuple[str, ...], words: dict[str, str] | None = None) -> str | None:
    """The one label of `labels` that `value` names, ignoring case and extra words; else None.

    "Very Easy" -> "very easy"; "medium difficulty" -> "medium"; "coding and debugging" ->
    "Coding & Debugging". A value naming several labels (the judge echoing the placeholder
    "very poor/poor/average/...") or none of them is left untagged.
    """
    if not isinstance(value, str):
        return None
    v = _norm(value)
    normed = {_norm(label): label for label in labels}
    if v in normed:
        return normed[v]
    # Longest labels first, so "very easy" is found as itself rather than as "easy".
    alternation = "|".join(re.escape(n) for n in sorted(normed, key=len, reverse=True))
    hits = {normed[m.group(1)] for m in re.finditer(rf"\b({alternation})\b", v)}
    if not hits and words:
        hits = {words[w] for w in v.split() if w in words}
    return hits.pop() if len(hits) == 1 else None


def _text(value) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "; ".join(x.strip() for x in value)
    return None


# "label" prefills the reply up to the label's value, `{"difficulty": "`, and stops at the closing
# quote: the judge only has to name a label. For judges too small to write the JSON (SmolLM2 in the
# tiny profile labelled 0 of 32 task categories in "json" mode); the explanation fields stay empty.
PREFILLS = ("json", "label")


class JudgeTagger(Tagger):
    prompt: str = ""
    label_key: str = ""  # the JSON key whose absence makes the whole reply a parse failure
    label_field: str = ""  # the field holding the canonical label
    labels: tuple[str, ...] = ()
    texts: ClassVar[dict[str, str]] = {}  # field -> JSON key of a free-text field, kept as written
    keys: tuple[str, ...] = ()

    def __init__(
        self,
        judge_model: str = PAPER_JUDGE,  # paper: Llama-3-8B-Instruct
        judge_engine: str = "vllm",
        max_tokens: int = 1024,  # the reference's default
        batch_size: int = 64,
        prefill: str = "json",  # "json": the reply starts "{" (paper). "label": see PREFILLS
        engine=None,  # an engine already built, e.g. shared with other taggers
        **engine_kwargs,
    ):
        super().__init__()
        if prefill not in PREFILLS:
            raise ValueError(f"judge prefill must be one of {PREFILLS}, got {prefill!r}")
        self.judge_model, self.judge_engine, self.batch_size = judge_model, judge_engine, batch_size
        self.prefill = prefill
        self.engine = tagger_engine(engine, judge_engine, judge_model, batch_size, **engine_kwargs)
        stop = ("}",) if prefill == "json" else ('"', "\n")
        self.sampling = Sampling(temperature=0.0, max_tokens=max_tokens, stop=stop)
        self.stats = {"parse_failures": 0, "unknown_labels": 0}

    def tag(self, records: list[dict]) -> list[dict]:
        prompts = [self._prompt(r["instruction"]) for r in records]
        outputs = self.engine.complete(prompts, self.sampling)
        return [self._fields(outs[0].text) for outs in outputs]

    def _prompt(self, instruction: str) -> str:
        chat = [{"role": "user", "content": self.prompt.format(instruction=instruction)}]
        # Prefill "{": the judge can only continue a JSON object (paper; the reference does this).
        prompt = self.engine.render_chat(chat, add_generation_prompt=True) + "{"
        return prompt + f'"{self.label_key}": "' if self.prefill == "label" else prompt

    def _fields(self, completion: str) -> dict:
        if self.prefill == "label":  # the reply is the label alone: rebuild the one-key object
            completion = json.dumps({self.label_key: completion.strip()})[1:-1]
        # The engine drops the stop string, so the closing brace is ours to put back.
        obj = parse_judge_json("{" + completion + "}", self.keys)
        if obj is None or self.label_key not in obj:
            self.count("parse_failures")
            return dict.fromkeys(self.fields)
        out = self.read(obj)
        if out[self.label_field] is None:
            self.count("unknown_labels")
        return out

    def read(self, obj: dict) -> dict:
        out = {field: _text(obj.get(key)) for field, key in self.texts.items()}
        return out | {self.label_field: canonical_label(obj.get(self.label_key), self.labels)}

    def info(self) -> dict:
        info = {"judge_model": self.judge_model, "judge_engine": self.judge_engine,
                "max_tokens": self.sampling.max_tokens, "prefill": self.prefill, "stop": list(self.sampling.stop)}
        if "smollm2" in self.judge_model.lower():
            info["stand_in"] = STAND_IN_NOTE
        return info


@register_tagger("task_category")
class TaskCategoryTagger(JudgeTagger):
    fields = ("task_category", "other_task_category")
    prompt, label_key, label_field = CLASSIFICATION_PROMPT, "primary_tag", "task_category"
    keys = ("primary_tag", "other_tags")

    def read(self, obj: dict) -> dict:
        primary = canonical_label(obj.get("primary_tag"), TASK_CATEGORIES, _CATEGORY_WORDS)
        others = obj.get("other_tags")
        others = [others] if isinstance(others, str) else others if isinstance(others, list) else []
        labels = [canonical_label(o, TASK_CATEGORIES, _CATEGORY_WORDS) for o in others]
        # Unknown or placeholder tags ("<tag 1>") are dropped; order and the judge's choice kept.
        return {"task_category": primary,
                "other_task_category": list(dict.fromkeys(x for x in labels if x))}


@register_tagger("difficulty")
class DifficultyTagger(JudgeTagger):
    fields = ("intent", "knowledge", "difficulty")
    prompt, label_key, label_field = DIFFICULTY_PROMPT, "difficulty", "difficulty"
    labels, texts = DIFFICULTY_LEVELS, {"intent": "intent", "knowledge": "knowledge"}
    keys = ("intent", "knowledge", "difficulty")


@register_tagger("input_quality")
class InputQualityTagger(JudgeTagger):
    fields = ("quality_explanation", "input_quality")
    prompt, label_key, label_field = QUALITY_PROMPT, "input_quality", "input_quality"
    labels, texts = QUALITY_LEVELS, {"quality_explanation": "explanation"}
    keys = ("explanation", "input_quality")
