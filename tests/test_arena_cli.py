"""Arena-Hard from the command line: arena_version and arena_control_features in `eval run`'s config, and the
`python -m eval arena` leaderboard on evaluation folders written by the eval stage's own code (prompts in the
project's store, judge items by the benchmark, judgments by `judge_set`, scores and answer metadata by
`score_arena`). The judge here is a rule, not a model: it prefers the longer answer (a length bias that style
control should remove), so the tests run in seconds and know what the scores must do."""
import csv
import json

import pytest
from conftest import ROOT

EVAL_TINY = str(ROOT / "recipes/configs/eval/tiny.yaml")
N = 40


class LengthJudge:
    """Prefers the longer answer; every fifth question it prefers the shorter one (so the fit is not separable)."""

    engine = None  # no model behind it: eval.run's judge_shard reads the judge's token usage from its engine

    def __init__(self, name="length-judge"):
        self.name = name

    def info(self):
        return {"judge_model": self.name, "judge_engine": "rule", "prefill": "none", "prompt": "length"}

    def judge(self, items):
        out = []
        for it in items:
            a, b = len(it["answer_a"].split()), len(it["answer_b"].split())
            if int(it["id"][1:]) % 5 == 0:
                a, b = b, a
            label = "A>B" if a > b else "B>A" if b > a else "A=B"
            out.append({"judgment": f"My final verdict is: [[{label}]]", "verdict": label})
        return out


def _answer(i, long, markdown=False):
    words = " ".join(f"w{k}" for k in range(90 if long else 30))
    return f"**Answer {i}**\n- {words}\n- done" if markdown else words


def _evaluate(root, model, answers, *, baseline="base", judge="length-judge", version="v0.1", categories=False):
    """One model's evaluation folder, written as `eval run` writes it after its answers exist."""
    from core.store import DatasetDir, config_hash
    from eval.benchmarks import HeadToHead, get_benchmark
    from eval.benchmarks.arena_hard import score_arena
    from eval.config import BenchArgs
    from eval.run import judge_set

    cats = ("hard_prompt", "creative_writing")
    prompts = [{"id": f"q{i:02d}", "instruction": f"question {i}", "index": i,
                **({"category": cats[i % 2]} if categories else {})} for i in range(N)]
    refs = {p["id"]: " ".join(["b"] * 50) for p in prompts}
    out = root / model / "arena_hard"
    pdir = DatasetDir(out / "prompts")
    pdir.begin("prompts", {"prompts_hash": config_hash({"prompts": prompts})})
    pdir.write_shard(0, prompts)
    pdir.finish({"prompts": len(prompts)})
    recs = {p["id"]: {"id": p["id"], "response": a} for p, a in zip(prompts, answers)}
    j = LengthJudge(judge)
    items = get_benchmark("arena_hard").items(HeadToHead(prompts, recs, refs, model, baseline, out), 0)
    judgments = judge_set(j, "arena_hard", items, out,
                          {"references": config_hash({"refs": refs}), "judge": j.info()}, 16)
    bargs = BenchArgs(reference="generate", reference_model="base", arena_version=version)
    res = score_arena(prompts, refs, recs, judgments, model, baseline, out, f"rule:{judge}", bargs, 0)
    return root / model, res


@pytest.fixture
def two_models(tmp_path):
    # verbose: long markdown answers on 3 questions in 4; concise: plain and long on 1 in 4. The judge rewards
    # length only, so without style control verbose looks far better; with it the two are close.
    verbose = [_answer(i, i % 4 != 1, markdown=True) for i in range(N)]
    concise = [_answer(i, i % 4 == 0) for i in range(N)]
    return _evaluate(tmp_path, "verbose", verbose)[0], _evaluate(tmp_path, "concise", concise)[0]


def _rows(out):
    with open(out / "leaderboard.csv") as f:
        return list(csv.DictReader(f))


def test_eval_stage_writes_answer_metadata_and_style(two_models):
    verbose, _ = two_models
    meta = json.loads((verbose / "arena_hard/answer_metadata.json").read_text())
    assert set(meta) == {"verbose", "base"} and len(meta["verbose"]) == len(meta["base"]) == N
    assert meta["verbose"]["q00"]["bold_count"]["**"] == 1 and meta["verbose"]["q00"]["list_count"]["unordered"] == 2
    s = json.loads((verbose / "arena_hard/scores.json").read_text())
    assert s["baselines"] == {"": "base"} and s["version"] == "v0.1" and len(s["rows"]) == 1
    assert s["style"]["base"]["avg_tokens"] == 50 and s["style"]["verbose"]["avg_tokens"] > 60
    assert s["rows"][0]["score"] > 60 and s["rows"][0]["n_judgments"] == 2 * N
    assert s["control"] == [] and s["control_fit"] is None and s["rows"][0]["control_fit"] is None  # no style control


def test_style_control_brings_the_verbose_model_toward_the_other(two_models, tmp_path, capsys):
    from eval.__main__ import main

    plain, styled = tmp_path / "plain", tmp_path / "styled"
    assert main(["arena", *map(str, two_models), "--output", str(plain)]) == 0
    printed = capsys.readouterr().out
    assert "verbose" in printed and "average #tokens" in printed and "base" in printed
    assert main(["arena", *map(str, two_models), "--control-features", "length", "markdown",
                 "--output", str(styled)]) == 0
    before, after = ({r["model"]: float(r["score"]) for r in _rows(d)} for d in (plain, styled))
    assert before["base"] == after["base"] == 50.0  # listed as show_result lists the baseline
    assert before["verbose"] - before["concise"] >= 25
    assert after["verbose"] < before["verbose"] - 10
    assert abs(after["verbose"] - after["concise"]) < (before["verbose"] - before["concise"]) / 2
    board = json.loads((styled / "leaderboard.json").read_text())
    assert board["control"] == ["length", "markdown"] and board["judge"]["judge_model"] == "length-judge"
    assert {r["interval"] for r in board["rows"]} == {0.9}  # style control: 5% and 95% quantiles
    # show_result's own L-BFGS fit unless told otherwise, named in every row
    assert board["control_fit"] == "show_result" and {r["control_fit"] for r in board["rows"]} == {"show_result"}
    assert {r["control_fit"] for r in _rows(styled)} == {"show_result"}
    assert "style control: length markdown (show_result fit)" in (styled / "leaderboard.md").read_text()
    exact = tmp_path / "exact"
    assert main(["arena", *map(str, two_models), "-f", "length", "markdown", "--control-fit", "converged",
                 "--output", str(exact)]) == 0
    converged = {r["model"]: float(r["score"]) for r in _rows(exact)}
    assert {r["control_fit"] for r in _rows(exact)} == {"converged"}
    # The same correction run to its optimum: where style all but decides the verdicts, as for this judge, the 50
    # steps stop further short than on random verdicts (1.3 points here, tests/test_arena_scoring.py: 0.2).
    assert abs(converged["verbose"] - converged["concise"]) < (before["verbose"] - before["concise"]) / 2
    assert 0.5 < abs(converged["verbose"] - after["verbose"]) < 2


def test_mismatched_baseline_or_judge_is_refused_in_one_line(tmp_path, capsys):
    from eval.__main__ import main

    answers = [_answer(i, i % 2 == 0) for i in range(N)]
    a, _ = _evaluate(tmp_path, "a", answers)
    b, _ = _evaluate(tmp_path, "b", answers, baseline="other-base")
    c, _ = _evaluate(tmp_path, "c", answers, judge="another-judge")
    capsys.readouterr()  # the judges' progress bars
    for other, says in ((b, "different baselines ('other-base' vs 'base')"),
                        (c, "different judges (judge_model 'another-judge' vs 'length-judge')")):
        with pytest.raises(SystemExit) as e:
            main(["arena", str(a), str(other), "--output", str(tmp_path / "board")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["arena", str(a), str(tmp_path / "missing")])
    assert e.value.code == 2 and "missing: no Arena-Hard scores.json" in capsys.readouterr().err


def test_v2_scores_one_row_per_category(tmp_path, capsys):
    from eval.__main__ import main

    m1, res = _evaluate(tmp_path, "m1", [_answer(i, i % 3 == 0) for i in range(N)], version="v2.0", categories=True)
    m2, _ = _evaluate(tmp_path, "m2", [_answer(i, i % 3 != 0) for i in range(N)], version="v2.0", categories=True)
    rows = json.loads((m1 / "arena_hard/scores.json").read_text())["rows"]
    assert [r["category"] for r in rows] == ["hard_prompt", "creative_writing"]
    assert all(r["version"] == "v2.0" and r["interval"] == 0.9 and r["n_judgments"] == N for r in rows)
    assert set(res["categories"]) == {"hard_prompt", "creative_writing"} and res["category"] == "hard_prompt"
    assert main(["arena", str(m1), str(m2), "--output", str(tmp_path / "board")]) == 0  # version: the runs'
    assert "Arena-Hard v2.0, creative_writing vs base" in capsys.readouterr().out
    board = _rows(tmp_path / "board")
    assert [(r["category"], r["model"]) for r in board if r["model"] == "base"] == [
        ("hard_prompt", "base"), ("creative_writing", "base")]
    assert sorted((r["category"], r["model"]) for r in board if r["model"] != "base") == [
        ("creative_writing", "m1"), ("creative_writing", "m2"), ("hard_prompt", "m1"), ("hard_prompt", "m2")]
    # v0.1 pools the categories: one leaderboard
    assert main(["arena", str(m1), str(m2), "--version", "v0.1", "--output", str(tmp_path / "v01")]) == 0
    assert len(_rows(tmp_path / "v01")) == 3


@pytest.mark.parametrize("override, says", [
    (["--arena_version", "v3"], "arena_version must be one of v0.1, v2.0, got 'v3'"),
    (["--arena_control_features", "length", "colour"], "arena_control_features must be a list of length, markdown"),
    (["--arena_control_fit", "exact"], "arena_control_fit must be one of show_result, converged, got 'exact'"),
])
def test_bad_arena_config_is_one_line(tmp_path, capsys, override, says):
    from eval.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--config", EVAL_TINY, *override, "--output_dir", str(tmp_path), "--report_to", "none"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and "command line" in err and len(err.strip().splitlines()) == 1


def test_arena_configs_and_tiny_v2_questions(tmp_path):
    from core.config import parse
    from eval import benchmarks
    from eval.benchmarks.arena_hard import arena_baseline
    from eval.config import ALL

    for profile in ("paper", "tiny"):
        bargs = parse(["--config", str(ROOT / f"recipes/configs/eval/{profile}.yaml")], ALL)[3]
        assert (bargs.arena_version, bargs.arena_control_features) == ("v0.1", [])  # the paper's
        assert bargs.arena_control_fit == "show_result"  # when style control is asked for: show_result's numbers
    prompts, refs = benchmarks.load("arena_hard", "tiny", version="v2.0")
    assert refs is None and {p["category"] for p in prompts} == {"hard_prompt", "creative_writing"}
    assert {p["category"] for p in prompts[:2]} == {"hard_prompt", "creative_writing"}  # --arena_limit 2 sees both
    assert arena_baseline("v2.0", "creative_writing") == "gemini-2.0-flash-001"
    (tmp_path / "q.jsonl").write_text(json.dumps({"uid": "q-01", "prompt": "Say hi."}) + "\n")
    with pytest.raises(ValueError, match="needs a `category` on every question; q-01 has none"):
        benchmarks.load("arena_hard", str(tmp_path / "q.jsonl"), version="v2.0")


@pytest.mark.slow
def test_tiny_v2_evaluation_and_leaderboard(trained_sft, tmp_path, capsys):
    """The tiny profile runs Arena-Hard v2.0 end to end offline: eval/data/tiny_arena_v2.jsonl, SmolLM2's answers
    as the baseline of both categories, SmolLM2 judging; then the leaderboard with style control."""
    from eval.__main__ import main

    common = ["run", "--config", EVAL_TINY, "--arena_version", "v2.0", "--benchmarks", "arena_hard", "--arena_limit",
              "2", "--arena_max_tokens", "32", "--references_dir", str(tmp_path / "refs"), "--report_to", "none"]
    assert main([*common, "--model", str(trained_sft), "--output_dir", str(tmp_path / "sft")]) == 0
    assert main([*common, "--model", "embedded:smollm2-135m-instruct", "--output_dir", str(tmp_path / "base")]) == 0
    ah = json.loads((tmp_path / "sft/results.json").read_text())["benchmarks"]["arena_hard"]
    assert set(ah["categories"]) == {"hard_prompt", "creative_writing"} and ah["category"] == "hard_prompt"
    assert ah["reference"] == "smollm2-135m-instruct" and ah["version"] == "v2.0"
    assert (tmp_path / "refs/arena_hard_v2.0/embedded_smollm2-135m-instruct/answers").is_dir()  # beside v0.1's
    assert "Arena-Hard hard_prompt " in capsys.readouterr().out  # the summary line names each category
    meta = json.loads((tmp_path / "sft/arena_hard/answer_metadata.json").read_text())
    assert len(meta) == 2 and all(len(m) == 2 for m in meta.values())  # two models, one question per category
    assert main(["arena", str(tmp_path / "sft"), str(tmp_path / "base"), "-f", "length", "markdown",
                 "--output", str(tmp_path / "board")]) == 0
    board = _rows(tmp_path / "board")
    assert [r["category"] for r in board] == ["hard_prompt"] * 2 + ["creative_writing"] * 2
    assert {r["model"] for r in board} == {ah["model"], "smollm2-135m-instruct"}
