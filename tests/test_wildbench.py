"""WildBench v2's WB-Score (eval/benchmarks/wildbench.py): the score arithmetic on fabricated judgments, the judge's
prompt, a real tiny run through `python -m eval run`, and the table's "Beyond the paper" section."""
import json
from pathlib import Path

import pytest
from conftest import EVAL_TINY, TINY_MODEL

from eval.benchmarks import HeadToHead, get_benchmark
from eval.benchmarks.wildbench import (
    GROUP_WEIGHTS,
    PREFILL,
    parse_wildbench_score,
    render_history,
    task_groups,
    wb_scores,
)

WB = get_benchmark("wildbench")


def task(score, *groups, empty=False):
    return {"score": score, "groups": list(groups), "empty": empty}


def test_wb_score_rescaling_groups_and_unparsed_by_hand():
    tasks = [task(8.0, "Coding & Debugging", "Planning & Reasoning"),
             task(6.0, "Planning & Reasoning"),
             task(3.0, "Creative Tasks"),
             task(None, "Creative Tasks"),  # unparsed: left out of every mean
             task(1.0, "Math & Data Analysis", empty=True)]  # empty answer: 1 in the plain mean, in no group
    r = wb_scores(tasks)
    # plain: mean(8, 6, 3, 1) = 4.5 -> (4.5 - 5) * 2 * 10
    assert r["mean_score"] == pytest.approx(4.5) and r["wb_score"] == pytest.approx(-10.0)
    # groups: Coding [8] -> 60; Planning & Reasoning [8, 6] -> 40; Creative [3] -> -40; Math: only the empty one
    assert {g: c["wb_score"] for g, c in r["categories"].items()} == pytest.approx(
        {"Coding & Debugging": 60.0, "Planning & Reasoning": 40.0, "Creative Tasks": -40.0})
    assert r["categories"]["Planning & Reasoning"]["n"] == 2
    # weighted over the groups present: (1.25 * 60 + 1.25 * 40 + 0.5 * -40) / (1.25 + 1.25 + 0.5) = 105 / 3
    assert r["wb_score_macro"] == pytest.approx(35.0)
    assert (r["n_scored"], r["n_unparsed"], r["n_empty"]) == (4, 1, 1)


def test_task_macro_reproduces_the_leaderboards_llama3_8b_instruct():
    """WildBench's own per-group scores of Meta-Llama-3-8B-Instruct (leaderboard/data_dir/score.json, d6b8dca),
    one task per group at the mean that gives each: the weighted macro is the leaderboard's WB_score.task_macro."""
    published = {"Creative Tasks": 43.56589147286822, "Planning & Reasoning": 34.401197604790426,
                 "Math & Data Analysis": 16.972111553784863, "Information/Advice seeking": 39.30693069306932,
                 "Coding & Debugging": 21.9811320754717}
    r = wb_scores([task(5 + s / 20, g) for g, s in published.items()])
    assert r["wb_score_macro"] == pytest.approx(29.20277208638918)
    assert set(GROUP_WEIGHTS) == set(published)


def test_task_counts_once_per_group_and_unknown_types_are_refused(tmp_path):
    assert task_groups("Editing", ["Creative Writing", "Math"]) == ["Creative Tasks", "Math & Data Analysis"]
    row = {"session_id": "x", "conversation_input": [{"role": "user", "content": "hi"}], "checklist": ["ok?"],
           "primary_tag": "Poetry", "secondary_tags": []}
    f = tmp_path / "wb.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="task type 'Poetry'"):
        WB.load(str(f))
    f.write_text(json.dumps({**row, "primary_tag": "Others", "conversation_input": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    with pytest.raises(ValueError, match="end with the user turn"):
        WB.load(str(f))


@pytest.mark.parametrize("text, score", [
    ('{"strengths": "clear", "weaknesses": "none", "score": "7"}', 7.0),
    ('```json\n{"strengths": "x", "score": 8}\n```', 8.0),  # a number, in a code fence
    ('analysis first... {"strengths": "a "quoted" word", "score": "6"}', 6.0),  # broken JSON: WildBench's pattern
    ('"score": 9', 9.0),  # unquoted
    ('{"score": "[5]"}', 5.0),  # the template's brackets copied
    ('{"score": "11"}', None), ('{"score": "0"}', None), ('{"score": "seven"}', None),
    ("The reply is good.", None), ("", None), (None, None),
    (PREFILL + '10"}', 10.0),  # what a prefilled tiny judge's reply becomes
])
def test_judge_scores_from_broken_judgments(text, score):
    assert parse_wildbench_score(text) == score


def test_prompt_shows_history_query_answer_and_checklist():
    prompts, refs = WB.load("tiny")
    assert refs == {} and len(prompts) == 8
    multi = [p for p in prompts if p["history"]]
    assert len(multi) == 3 and all(p["history"][-1]["role"] == "assistant" for p in multi)
    assert len({g for p in prompts for g in task_groups(p["primary_tag"], p["secondary_tags"])}) == 5
    p = next(p for p in prompts if p["id"] == "tinywb-04")
    h = HeadToHead(prompts, {q["id"]: {"response": f"answer to {q['id']}"} for q in prompts}, {}, "m", None, Path("."))
    items = {it["id"]: it for it in WB.items(h, seed=0)}
    assert len(items) == 8 and items["tinywb-04"]["answer_b"] == ""  # one judgment per task, no reference
    text = WB.judge_prompt(max_tokens=64, prefill="none", prompt_file=None,
                           top_logprobs=5).conversation(items["tinywb-04"])[0]["content"]
    assert render_history(p["history"]) in text and text.count("USER: ") == 1 and "ASSISTANT: As days" in text
    assert p["instruction"] in text and "answer to tinywb-04" in text
    assert all(f"- {c}\n" in text for c in p["checklist"])
    assert '"score"' in text and "{HISTORY}" not in text and "{CHECKLIST}" not in text
    label = WB.judge_prompt(max_tokens=8, prefill="label", prompt_file=None, top_logprobs=5)
    assert label.prefill == PREFILL and label.sampling.stop == ('"',)


def test_score_of_judgments_says_judge_version_and_history(tmp_path):
    prompts, _ = WB.load("tiny", limit=4)  # 01-03 single-turn, 04 multi-turn
    answers = {p["id"]: {"response": "x", "messages": [{}, {}]} for p in prompts}
    answers["tinywb-02"]["response"] = ""
    h = HeadToHead(prompts, answers, {}, "m", None, tmp_path)
    judgments = [{"id": "tinywb-01", "verdict": "9.0", "identical": False},
                 {"id": "tinywb-02", "verdict": None, "identical": True},  # empty answer: 1 without a call
                 {"id": "tinywb-03", "verdict": None, "identical": False},  # unreadable
                 {"id": "tinywb-04", "verdict": "5.0", "identical": False}]
    from eval.config import JudgeArgs

    res = WB.score(h, judgments, None, JudgeArgs(), None)  # the default judge: gpt-4.1 on the OpenAI API
    assert res["version"] == "v2" and res["judge_model"] == "gpt-4.1" and res["judge"] == "openai:gpt-4.1"
    assert (res["n_scored"], res["n_unparsed"], res["n_empty"]) == (3, 1, 1)
    assert res["wb_score"] == pytest.approx(((9 + 1 + 5) / 3 - 5) * 20)
    assert (res["multi_turn"], res["answered_without_history"]) == (1, 1)
    assert "WITHOUT their history" in WB.summary(res)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert [t["score"] for t in saved["tasks"]] == [9.0, 1.0, None, 5.0]


def _result(tmp_path, name, **benchmarks):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"model": name, "model_name": name, "profile": "paper",
                                                "benchmarks": benchmarks}))
    return d


def test_table_prints_beyond_the_paper_apart_from_table_1(tmp_path):
    from eval import table

    wb = {"wb_score_macro": 12.5, "wb_score": 15.0, "judge_model": "gpt-4.1", "version": "v2"}
    lm = {"ifeval": {"prompt_level_strict_acc": 0.5, "inst_level_strict_acc": 0.6, "prompt_level_loose_acc": 0.55,
                     "inst_level_loose_acc": 0.65},
          "ifbench": {"prompt_level_strict_acc": 0.2, "inst_level_strict_acc": 0.25, "prompt_level_loose_acc": 0.22,
                      "inst_level_loose_acc": 0.3}}
    a = _result(tmp_path, "magpie_air", wildbench=wb, lm_eval=lm)
    b = _result(tmp_path, "plain", alpaca_eval={"length_controlled_winrate": 20.0, "win_rate": 18.0,
                                                "judge_model": "gpt-4.1"})
    md = table.write([a, b], tmp_path / "t", only_measured=True)["text"]
    table1, beyond = md.split("Beyond the paper")
    assert "WB" not in table1.split("\n\n")[0].splitlines()[0]  # no WB-Score column in Table 1
    lines = beyond.splitlines()
    head = next(ln for ln in lines if ln.startswith("| Model"))
    assert head == ("| Model | IFEval (mean of 4 accuracies, %) | IFBench (prompt loose, %) | WB-Score v2 "
                    "| WB-Score v2 (plain mean) |")
    ours = next(ln for ln in lines if ln.startswith("| magpie_air (ours)"))
    # judged by gpt-4.1, published by gpt-4o: marked; IFEval/IFBench have no judge
    assert ours == "| magpie_air (ours) | 57.50 | 22.00 | 12.50† | 15.00† |"
    assert "| Llama-3-8B-Instruct (published) | 76.80 | – | 29.20 | 33.18 |" in lines
    assert not any(ln.startswith("| plain (ours)") for ln in lines)  # measured nothing beyond the paper
    assert any("gpt-4o-2024-05-13" in ln and "d6b8dca" in ln for ln in lines)
    assert any("IFBench" in ln and "None published" in ln for ln in lines)


@pytest.mark.slow
def test_tiny_wildbench_run_judges_each_task_alone(tmp_path):
    from core import store
    from eval.__main__ import main

    out, refs = tmp_path / "eval", tmp_path / "refs"
    assert main(["run", "--config", EVAL_TINY, "--benchmarks", "wildbench", "--wildbench_prompts", "tiny",
                 "--wildbench_limit", "4", "--wildbench_max_tokens", "24", "--model", TINY_MODEL,
                 "--references_dir", str(refs), "--output_dir", str(out), "--report_to", "none"]) == 0
    res = json.loads((out / "results.json").read_text())["benchmarks"]["wildbench"]
    assert res["version"] == "v2" and res["judge_model"] == TINY_MODEL and res["reference"] is None
    assert res["prompts"] == 4 and res["n_scored"] + res["n_unparsed"] == 4 and res["n_scored"] >= 1
    assert (res["multi_turn"], res["answered_without_history"]) == (1, 0)  # core.answer answered in the conversation
    answers = {a["id"]: a for a in store.DatasetDir(out / "wildbench" / "answers").records()}
    [multi] = [p for p in WB.load("tiny", limit=4)[0] if p["history"]]
    assert answers[multi["id"]]["messages"][:-1] == [*multi["history"], {"role": "user", "content": multi["instruction"]}]
    judgments = store.DatasetDir(out / "wildbench" / "judgments").records()
    assert len(judgments) == 4 and all(j["judgment"].startswith(PREFILL) for j in judgments)
    assert not refs.exists()  # graded alone: no reference model ran
