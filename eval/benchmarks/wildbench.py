"""WildBench v2's WB-Score: the model answers real users' tasks (the last user turn of a conversation, its history
given), and a judge grades each answer alone from 1 to 10 against the task's checklist. Not in the MAGPIE paper: the
table prints it in its "Beyond the paper" section, beside the published WB-Score of Llama-3-8B-Instruct
(eval/data/reference_scores.yaml), never as a Table 1 column.

What WildBench does, read in allenai/WildBench at commit d6b8dca (2024-08-01), and what we do:

* Tasks: the hub dataset allenai/WildBench, config `v2`, split `test` (1024 tasks; src/unified_utils.py). A task has
  `session_id`, `conversation_input` (the conversation up to and including the user turn to answer: role/content
  turns), `checklist` (5-10 questions), `primary_tag` and `secondary_tags` (the 12 task types below), `intent`.
  `wildbench_prompts: tiny` reads eval/data/tiny_wildbench.jsonl (8 tasks written for this repo in the same layout,
  three of them multi-turn); a local .jsonl in that layout works too.
* Answers: greedy, top_p 1, up to 4096 tokens, the whole conversation as chat history (scripts/_common_vllm.sh,
  src/unified_infer.py). A prompt record here is {"id": session_id, "instruction": the last user turn, "history":
  the turns before it, "checklist", "primary_tag", "secondary_tags"}. `core.answer` answers `instruction` in the
  conversation `history` holds; an answer set made without it (one answer message after one user turn) is counted
  in results.json's `answered_without_history`, and the summary line says so.
* The judge (single-answer grading, `src/eval.py --mode score`): one user message with the history rendered as
  "USER: ...\\n\\nASSISTANT: ...\\n\\n", the current query, the answer and the checklist as "- item" lines; no
  reference answer, one judgment per task, nothing truncated (its scripts pass --max_words_to_eval -1). It writes
  JSON {"strengths", "weaknesses", "score": "1~10"}; the score is read with json.loads, else the `"score": "..."`
  pattern (extract_values_from_json), and judgments whose score cannot be read are left out (the leaderboard's
  Meta-Llama-3-8B-Instruct row counts 1023 of 1024). An empty answer scores 1 without a call. WildBench's judge
  is gpt-4o-2024-05-13 (evaluation/run_score_eval_batch.sh: "Starting 0612"), temperature 0, JSON mode; ours is the
  configured judge (the default gpt-4.1), and our prompt is ours (eval/data/wildbench_judge_prompt.yaml), written
  after WildBench's evaluation/eval_template.score.v2.md. `judge_prefill: label` (the tiny profile): the reply is
  prefilled up to the score (`{"score": "`), so that SmolLM2-135M only writes a number.
* The score (leaderboard/data_dir/_create_tables.py, the numbers of leaderboard/data_dir/all_stat_wildbench.-1.json):
  WB_score = (mean - 5) * 2 * 10 over every scored task; per task group, the same over the tasks whose primary or
  secondary tags map to it (a task counts once per group; empty answers are left out of the groups); WB-Score as
  the leaderboard ranks it, `WB_score.task_macro`, is the groups' weighted mean, weights Creative Tasks 0.5,
  Planning & Reasoning 1.25, Math & Data Analysis 1, Information/Advice seeking 0.75, Coding & Debugging 1.25.
  WildBench divides by the sum of all five weights; we divide by the weights of the groups present, the same
  number whenever all five are (always on the full set).

    <output_dir>/wildbench/{prompts,answers,judgments}/   dataset directories (resumable)
    <output_dir>/wildbench/scores.json                    each task's score and groups, and the result
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from core.engines import Sampling
from core.store import atomic_write_text

from ..judges import JudgePrompt
from .base import DATA, JudgedBenchmark, engine_judge, judge_texts, judged_records, read_jsonl, register_benchmark

WB_REPO, WB_CONFIG, WB_SPLIT = "allenai/WildBench", "v2", "test"
VERSION = "v2"
TINY = DATA / "tiny_wildbench.jsonl"
JUDGE_PROMPT = DATA / "wildbench_judge_prompt.yaml"
PREFILL = '{"score": "'  # judge_prefill: label; the judge writes the number and its closing quote

# WildBench's task types and the five groups the leaderboard scores (_create_tables.py task_group_new; the tags are
# spelled as the dataset spells them).
TASK_GROUP = {
    "Information seeking": "Information/Advice seeking", "Advice seeking": "Information/Advice seeking",
    "Creative Writing": "Creative Tasks", "Editing": "Creative Tasks", "Brainstorming": "Creative Tasks",
    "Role playing": "Creative Tasks", "Others": "Creative Tasks",
    "Coding & Debugging": "Coding & Debugging",
    "Reasoning": "Planning & Reasoning", "Planning": "Planning & Reasoning",
    "Math": "Math & Data Analysis", "Data Analysis": "Math & Data Analysis",
}
# _create_tables.py weights_by_task: the weighted task macro that the leaderboard reports as WB-Score.
GROUP_WEIGHTS = {"Creative Tasks": 0.5, "Planning & Reasoning": 1.25, "Math & Data Analysis": 1.0,
                 "Information/Advice seeking": 0.75, "Coding & Debugging": 1.25}


# ---------------------------------------------------------------------------------------------
# Tasks

def _turns(row: dict, where) -> list[dict]:
    turns = row.get("conversation_input")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: a task has no conversation_input (WildBench v2 layout: session_id, "
                         "conversation_input, checklist, primary_tag, secondary_tags)")
    turns = [{"role": t.get("role"), "content": t.get("content")} for t in turns]
    roles = [t["role"] for t in turns]
    alternate = roles == ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if not alternate or roles[-1] != "user" or not all(isinstance(t["content"], str) for t in turns):
        raise ValueError(f"{where}: task {row.get('session_id')!r}: conversation_input must alternate user and "
                         f"assistant text turns and end with the user turn to answer; its roles are {roles}")
    return turns


def task_records(rows: list[dict], where, limit: int | None = None) -> list[dict]:
    """Prompt records of WildBench v2 rows: the last user turn as `instruction`, the turns before it as `history`."""
    out = []
    for i, r in enumerate(rows[:limit] if limit else rows):
        turns = _turns(r, where)
        tags = [r.get("primary_tag"), *(r.get("secondary_tags") or [])]
        unknown = [t for t in tags if t not in TASK_GROUP]
        if unknown:
            raise ValueError(f"{where}: task {r.get('session_id')!r} has task type {unknown[0]!r}, not one of "
                             f"WildBench's {', '.join(TASK_GROUP)}")
        checklist = r.get("checklist")
        if not isinstance(checklist, list) or not checklist or not all(isinstance(c, str) for c in checklist):
            raise ValueError(f"{where}: task {r.get('session_id')!r} needs a checklist (a list of questions)")
        out.append({"id": str(r.get("session_id") or r.get("id") or f"{i:04d}"), "instruction": turns[-1]["content"],
                    "index": i, "history": turns[:-1], "checklist": list(checklist), "primary_tag": tags[0],
                    "secondary_tags": tags[1:]})
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: session ids are not unique")
    return out


def _load_hub(limit: int | None) -> list[dict]:
    try:
        from datasets import load_dataset

        rows = list(load_dataset(WB_REPO, WB_CONFIG, split=WB_SPLIT))
    except Exception as e:  # noqa: BLE001  (offline, gated, moved: one message that says what to do)
        raise RuntimeError(
            f"cannot fetch the WildBench v2 tasks ({WB_REPO}, config {WB_CONFIG}) from the hub: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; give wildbench_prompts: tiny or a local .jsonl in its "
            "layout, or run where the hub can be reached") from None
    return task_records(rows, f"{WB_REPO}:{WB_CONFIG}", limit)


def render_history(history: list[dict]) -> str:
    """The turns before the current query as WildBench's judge sees them (src/eval.py compose_eval_item)."""
    return "".join(f"{'USER' if t['role'] == 'user' else 'ASSISTANT'}: {t['content']}\n\n" for t in history or [])


def render_checklist(checklist: list[str]) -> str:
    return "".join(f"- {c}\n" for c in checklist)


# ---------------------------------------------------------------------------------------------
# Judgments and the score

_SCORE = re.compile(r'"score"\s*:\s*"([^"]*?)"')
_BARE_SCORE = re.compile(r'"score"\s*:\s*\[?\s*([0-9]+(?:\.[0-9]+)?)')


def _as_score(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().strip("[]").strip()
    try:
        s = float(value)
    except (TypeError, ValueError):
        return None
    return s if 1.0 <= s <= 10.0 else None


def parse_wildbench_score(text: str | None) -> float | None:
    """The 1-10 score of a judgment: its JSON's "score" (a string or a number), else the first `"score": "..."` in
    the text as WildBench reads a broken one, else a bare number after "score"; None when none is a score."""
    if not isinstance(text, str):
        return None
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and "score" in parsed:
        return _as_score(parsed["score"])
    for pattern in (_SCORE, _BARE_SCORE):
        m = pattern.search(text)
        if m:
            return _as_score(m.group(1))
    return None


def task_groups(primary_tag: str, secondary_tags: list[str]) -> list[str]:
    """The leaderboard groups a task counts in, each once."""
    return sorted({TASK_GROUP[t] for t in [primary_tag, *secondary_tags]})


def _rescale(mean: float) -> float:
    return (mean - 5.0) * 2.0 * 10.0  # 5 is "borderline acceptable": 0 on the WB-Score scale, 10 -> 100, 1 -> -80


def wb_scores(tasks: list[dict]) -> dict:
    """WB-Score of graded tasks, each {"score": 1-10 or None (unparsed), "groups": [...], "empty": bool}.

    wb_score_macro: the leaderboard's WB-Score (WB_score.task_macro), the weighted mean of the groups' scores;
    wb_score: WB_score over every scored task; mean_score: the judge's mean on its 1-10 scale; categories: each
    group's score and count. Unparsed judgments are left out; empty answers score 1 but count in no group."""
    scored = [t for t in tasks if t["score"] is not None]
    by_group: dict[str, list[float]] = {}
    for t in scored:
        if not t["empty"]:
            for g in t["groups"]:
                by_group.setdefault(g, []).append(t["score"])
    categories = {g: {"wb_score": _rescale(sum(v) / len(v)), "n": len(v)}
                  for g, v in sorted(by_group.items(), key=lambda kv: list(GROUP_WEIGHTS).index(kv[0]))}
    weight = sum(GROUP_WEIGHTS[g] for g in categories)
    mean = sum(t["score"] for t in scored) / len(scored) if scored else math.nan
    return {"wb_score_macro": sum(GROUP_WEIGHTS[g] * c["wb_score"] for g, c in categories.items()) / weight
            if weight else math.nan,
            "wb_score": _rescale(mean), "mean_score": mean, "categories": categories,
            "n_scored": len(scored), "n_unparsed": sum(t["score"] is None for t in tasks),
            "n_empty": sum(t["empty"] for t in tasks)}


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


@register_benchmark("wildbench")
class WildBench(JudgedBenchmark):
    label = "WB"  # where a table names each benchmark's judge
    needs_reference = False  # single-answer grading: the judge scores each answer against the checklist
    beyond = (("wb_score_macro", "WB-Score v2"), ("wb_score", "WB-Score v2 (plain mean)"))

    def load(self, source, limit=None, version=None):
        """source: hub (allenai/WildBench v2), tiny, or a .jsonl in its layout; version: v2 only. References: {}
        (graded alone)."""
        if version not in (None, VERSION):
            raise ValueError(f"WildBench {version!r}: only {VERSION} is supported")
        if source == "hub":
            return _load_hub(limit), {}
        path = TINY if source == "tiny" else Path(source)
        if not path.exists():
            raise FileNotFoundError(f"wildbench_prompts {path} does not exist (hub, tiny, or a .jsonl of WildBench v2 "
                                    "tasks)")
        return task_records(read_jsonl(path), path, limit), {}

    def prompt_set(self, bargs):
        return self.load(bargs.wildbench_prompts, bargs.wildbench_limit)

    def decoding(self, bargs):
        return {"max_tokens": bargs.wildbench_max_tokens, "repetition_penalty": 1.0}

    def version(self, bargs):
        return VERSION

    def games(self, prompts, seed):
        return [[(1, False)] for _ in prompts]  # one judgment per task, nothing to swap

    def items(self, h, seed):
        # answer_b "" is no second answer: judge_shard then scores an empty answer without a call (as WildBench
        # does, score 1), and the judge sees only answer_a.
        return [{"id": p["id"], "game": 1, "swapped": False, "history": render_history(p.get("history")),
                 "question": p["instruction"], "checklist": render_checklist(p["checklist"]),
                 "answer_a": h.answers[p["id"]]["response"], "answer_b": ""} for p in h.prompts]

    def judge_prompt(self, *, max_tokens, prefill, prompt_file, top_logprobs):
        # prompt_file is Arena-Hard's (arena_judge_prompt_file): WildBench's prompt is always ours.
        template = yaml.safe_load(JUDGE_PROMPT.read_text())["prompt_template"]
        label = prefill == "label"
        return JudgePrompt([{"role": "user", "content": template}],
                           ("HISTORY", "USER_QUERY", "MODEL_OUTPUT", "CHECKLIST"),
                           Sampling(temperature=0.0, max_tokens=max_tokens, stop=('"',) if label else ()),
                           f"ours ({JUDGE_PROMPT.name}, after WildBench's eval_template.score.v2.md)",
                           prefill=PREFILL if label else "", fields=("history", "question", "answer_a", "checklist"))

    def verdicts(self, engine, conversations, prompt):
        return [{"judgment": t, "verdict": parse_wildbench_score(t)} for t in judge_texts(engine, conversations,
                                                                                            prompt, '"}')]

    def score(self, h, judgments, eargs, jargs, bargs):
        by_id = {j["id"]: j for j in judgments}
        tasks = []
        for p in h.prompts:
            j = by_id[p["id"]]
            empty = bool(j.get("identical"))  # an empty answer: no call, score 1 (src/eval.py)
            score = 1.0 if empty else None if j["verdict"] is None else float(j["verdict"])
            tasks.append({"id": p["id"], "score": score, "empty": empty,
                          "groups": task_groups(p["primary_tag"], list(p.get("secondary_tags") or []))})
        res = wb_scores(tasks)
        multi = [p["id"] for p in h.prompts if p.get("history")]
        # core.answer passes `history` to the model (answers made before it did have 2 messages): the messages tell.
        without = [i for i in multi if len(h.answers[i].get("messages") or []) <= 2]
        res |= {"version": VERSION, "judge": engine_judge(jargs), "multi_turn": len(multi),
                "answered_without_history": len(without), **self.judge_record(jargs)}
        atomic_write_text(h.root / "scores.json", json.dumps({"model": h.model, "tasks": tasks, "result": res},
                                                             indent=2, default=str))
        return res

    def summary(self, res):
        def f(x):
            return f"{x:.1f}" if _num(x) else "–"

        warn = (f"; {res['answered_without_history']} of {res['multi_turn']} multi-turn tasks answered WITHOUT their "
                "history (answers made before core.answer took `history`: judge them again after answering again)") if res.get("answered_without_history") else ""
        return (f"WildBench {res.get('version', VERSION)} WB-Score {f(res.get('wb_score_macro'))} (task macro; "
                f"plain {f(res.get('wb_score'))}; {res.get('n_scored', 0)} scored, {res.get('n_unparsed', 0)} "
                f"unparsed{warn})")

    def log_values(self, res):
        flat = super().log_values(res)
        return flat | {f"{self.name}/category/{g}": c["wb_score"] for g, c in (res.get("categories") or {}).items()}

    def beyond_values(self, res):
        return {k: res[k] for k, _ in self.beyond if _num(res.get(k))}

    def pairs(self, d):
        judgments, prompts, answers = judged_records(d, self.name)
        rows = []
        for j in judgments:
            p = prompts.get(j["id"], {})
            verdict = "empty" if j.get("identical") else "unparsed" if j.get("verdict") is None else \
                f"{float(j['verdict']):g}"
            rows.append({"id": j["id"], "game": j["game"], "instruction": p.get("instruction"),
                         "category": p.get("primary_tag"), "model": answers.get(j["id"]), "verdict": verdict,
                         "judgment": j.get("judgment")})
        return rows
