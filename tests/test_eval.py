"""eval/: judge parsing, the paper table from result files, and a real tiny evaluation of the tiny
SFT model against its base (SmolLM2-135M-Instruct answers, references and judges)."""
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EVAL_SMALL, EVAL_TINY, ROOT, kill_when

# ---------------------------------------------------------------------------------------------
# Judges: reading what they wrote.

@pytest.mark.parametrize("text, verdict", [
    ("Long analysis ... My final verdict is: [[B>A]]", "B>A"),
    ("My final verdict is tie: [[A=B]].", "A=B"),
    ("Assistant A is much better [[A>>B]]\n\nFinal: [[A>>B]]", "A>>B"),  # the same label twice is one verdict
    ("first [[A>B]] then [[B>A]]", None),  # two different labels: ambiguous
    ("verdict: [B>>A]", "B>>A"),  # Arena-Hard's second pattern, single brackets
    ("[[A>>>B]]", None),  # not one of the five labels
    ("I think A is better.", None),
    ("", None),
    (None, None),
])
def test_arena_verdicts_from_broken_judgments(text, verdict):
    from eval.judges import parse_arena_verdict

    assert parse_arena_verdict(text) == verdict


def test_alpaca_preference_is_weighted_by_the_two_tokens():
    from eval.judges import alpaca_preference

    lp = math.log
    # P(m)=0.25, P(M)=0.75 among the top tokens: 2 - 0.25/(0.25+0.75)
    assert alpaca_preference({"The": lp(0.5), "M": lp(0.3), "m": lp(0.1)}, "The") == pytest.approx(1.75)
    # tokens match exactly, as in alpaca_eval's parser: " m" is another token
    assert alpaca_preference({"m": lp(0.2), " m": lp(0.2), "M": lp(0.1)}, "m") == pytest.approx(2 - 0.2 / 0.3)
    assert alpaca_preference({"M": lp(0.9)}, "M") == pytest.approx(2.0)  # m absent: probability 0
    # No logprobs (a text-only server): the label in the text; neither: unreadable.
    assert alpaca_preference(None, " m\n") == 1.0
    assert alpaca_preference({"The": lp(0.9)}, '"M"') == 2.0
    assert alpaca_preference({"The": lp(0.9)}, "The best model identifier") is None
    assert alpaca_preference(None, "") is None


def test_alpaca_judge_prompt_is_alpaca_evals_own():
    from eval.benchmarks.alpaca_eval import _alpaca_messages
    from eval.judges import _fill

    msgs = _alpaca_messages()
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = _fill(msgs[1]["content"], {"instruction": "Say {output_2}", "output_1": "one", "output_2": "two"})
    # One pass: the instruction's literal "{output_2}" is not filled in again.
    assert "Say {output_2}" in user and '"""one"""' in user and '"""two"""' in user


def test_alpaca_order_randomisation_is_alpaca_evals():
    from eval.benchmarks.alpaca_eval import alpaca_switched

    instructions = [f"instruction {i}" for i in range(200)]
    flips = alpaca_switched(instructions, 0)
    assert flips == alpaca_switched(instructions, 0)  # seeded on the instruction
    assert 70 < sum(flips) < 130
    assert flips != alpaca_switched(instructions, 1)


def test_annotations_undo_the_order_swap():
    from eval.benchmarks.alpaca_eval import alpaca_annotations

    prompts = [{"id": i, "instruction": f"q{i}", "index": n} for n, i in enumerate("abcd")]
    refs = {i: f"ref {i}" for i in "abcd"}
    answers = {i: {"response": f"ans {i}"} for i in "abcd"}
    answers["d"]["response"] = "ref d"
    judgments = [  # the verdict is about the order shown; swapped items showed the model first
        {"id": "a", "swapped": False, "identical": False, "verdict": "2.0", "judgment": "M"},
        {"id": "b", "swapped": True, "identical": False, "verdict": "1.25", "judgment": "m"},
        {"id": "c", "swapped": True, "identical": False, "verdict": None, "judgment": "??"},
        {"id": "d", "swapped": False, "identical": True, "verdict": None, "judgment": None},
    ]
    ann = alpaca_annotations(prompts, refs, answers, judgments, "model", "ref", "judge")
    prefs = [a["preference"] for a in ann]
    assert prefs[0] == 2.0 and prefs[1] == 1.75 and math.isnan(prefs[2]) and prefs[3] == 1.5
    assert ann[1]["output_1"] == "ref b" and ann[1]["output_2"] == "ans b" and ann[1]["index"] == 1


# ---------------------------------------------------------------------------------------------
# The paper table, from result files.

def _result(tmp_path, name, **kw):
    d = tmp_path / name
    d.mkdir()
    r = {"model": f"runs/{name}/sft/merged", "model_name": name, "profile": "paper", "dataset": None, "row": None,
         "benchmarks": {}}
    r.update(kw)
    (d / "results.json").write_text(json.dumps(r))
    return d


def _bench(lc, wr, se, arena, lo, hi):
    return {"alpaca_eval": {"length_controlled_winrate": lc, "win_rate": wr, "standard_error": se},
            "arena_hard": {"score": arena, "ci_lower": lo, "ci_upper": hi},
            "lm_eval": {"ifeval": {"prompt_level_strict_acc": 0.41}, "mmlu": {"acc": 0.6}, "seconds": 3.0}}


def test_table_from_result_files(tmp_path):
    from eval.table import build, markdown, to_csv, write

    air = _result(tmp_path, "magpie_air", dataset="magpie_air-raw-300k", benchmarks=_bench(24.0, 20.0, 1.3, 16.0,
                                                                                            14.5, 17.2))
    sg = _result(tmp_path, "sharegpt", dataset="sharegpt", benchmarks=_bench(9.0, 7.5, 0.8, 6.0, 5.0, 7.1))
    odd = _result(tmp_path, "my_model", benchmarks=_bench(1.0, 2.0, 0.5, 3.0, 2.0, 4.0))
    inst = _result(tmp_path, "inst", model="meta-llama/Meta-Llama-3-8B-Instruct", benchmarks=_bench(
        23.0, 22.0, 1.2, 20.0, 19.0, 21.0))
    from eval.table import load_results

    lines = build(load_results([air, sg, odd, inst]))
    by_label = {ln["label"]: ln for ln in lines}
    a = by_label["Magpie-Air-300K-Raw"]  # placed through the export-name alias
    assert a["measured_model"] == "magpie_air" and a["ours_lc"] == 24.0
    assert a["delta_lc"] == pytest.approx(24.0 - 21.99) and a["delta_arena"] == pytest.approx(16.0 - 15.8)
    assert by_label["ShareGPT"]["delta_wr"] == pytest.approx(7.5 - 7.20)
    assert by_label["Llama-3-8B-Instruct"]["measured_model"] == "inst"  # placed by its model id
    assert lines[-1]["label"] == "my_model" and lines[-1]["paper_lc"] is None  # no paper row: listed last
    assert by_label["WildChat"]["ours_lc"] is None  # paper rows without a measurement stay
    # Paper order is kept.
    labels = [ln["label"] for ln in lines]
    assert labels.index("ShareGPT") < labels.index("Magpie-Air-300K-Raw") < labels.index("Llama-3-8B-Instruct")

    md = markdown(lines)
    row = next(r for r in md.splitlines() if r.startswith("| Magpie-Air-300K-Raw"))
    assert "| 21.99 | 24.00 | +2.01 |" in row and "16.0 (-1.5/+1.2)" in row and "+0.20" in row
    assert "ifeval" in md and "prompt_level_strict_acc 0.410" in md
    # the paper's Table 3 beside the lm-eval scores, for the tasks it has
    t3 = next(r for r in md.splitlines() if r.startswith("| paper: Magpie-Air-300K-Filtered (Table 3)"))
    assert "| – | 64.45 % |" in t3
    rows = list(csv.DictReader(io.StringIO(to_csv(lines))))
    assert len(rows) == len(lines) and float(rows[labels.index("ShareGPT")]["ours_arena"]) == 6.0

    out = write([air, sg], tmp_path / "table", only_measured=True)
    assert out["rows"] == 2 and out["measured"] == 2
    assert (tmp_path / "table" / "table.png").stat().st_size > 10_000
    assert "WildChat" not in (tmp_path / "table" / "table.md").read_text()


def test_table_refuses_an_unfinished_evaluation(tmp_path):
    from eval.table import load_results

    (tmp_path / "eval").mkdir()
    with pytest.raises(FileNotFoundError, match="has no results.json"):
        load_results([tmp_path / "eval"])


def test_trained_model_is_placed_by_its_sft_set(tmp_path):
    """train_summary.json's dataset -> the export name -> the paper row."""
    from core.store import DatasetDir
    from eval.run import detect_dataset, trained_model
    from eval.table import paper_rows, row_of

    run = tmp_path / "magpie_air"
    (run / "sft" / "merged").mkdir(parents=True)
    (run / "sft" / "merged" / "config.json").write_text("{}")
    (run / "export").mkdir()
    (run / "sft" / "train_summary.json").write_text(json.dumps({"dataset": str(run / "export")}))
    DatasetDir(run / "filtered").begin("filter", {"preset": "air-300k-filtered"})
    model = trained_model(str(run / "sft"))
    assert model.endswith("sft/merged")
    assert detect_dataset(model) == "magpie_air-air-300k-filtered"
    assert row_of({"dataset": detect_dataset(model)}, paper_rows()[0]) == "magpie-air-300k-filtered"


def test_bad_eval_config_is_one_line_error(tmp_path, capsys):
    from eval.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--config", EVAL_TINY, "--benchmarks", "mt_bench", "--output_dir", str(tmp_path)])
    assert e.value.code == 2 and "unknown benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", EVAL_TINY, "--alpaca_prompts", str(tmp_path / "none.jsonl"),
              "--benchmarks", "alpaca_eval", "--output_dir", str(tmp_path / "o"), "--report_to", "none"])
    assert e.value.code == 2 and "none.jsonl does not exist" in capsys.readouterr().err


def test_benchmarks_are_found_by_name_and_an_unknown_one_is_refused_naming_the_known(tmp_path, capsys):
    from eval.__main__ import main
    from eval.benchmarks import BENCHMARKS, get_benchmark
    from eval.benchmarks.arena_hard import ArenaHard

    assert list(BENCHMARKS) == ["alpaca_eval", "arena_hard", "lm_eval", "wildbench"]
    arena = get_benchmark("arena_hard")
    assert isinstance(arena, ArenaHard) and arena.name == "arena_hard" and arena.judged
    assert not get_benchmark("lm_eval").judged
    with pytest.raises(ValueError, match=r"unknown benchmark 'mt_bench'; choose from \['alpaca_eval', 'arena_hard'"):
        get_benchmark("mt_bench")
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", EVAL_TINY, "--benchmarks", "arena_hard", "mt_bench", "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert "unknown benchmark(s) ['mt_bench']; choose from ['alpaca_eval', 'arena_hard', 'lm_eval', 'wildbench']" in err


def test_paper_judge_without_a_key_fails_before_any_generation(tmp_path, capsys, monkeypatch):
    from eval.__main__ import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(ROOT / "recipes/configs/eval/paper.yaml"), "--model", "some/model",
              "--output_dir", str(tmp_path / "o"), "--report_to", "none"])
    assert e.value.code == 2 and "OPENAI_API_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "o" / "alpaca_eval").exists()


PAPER = str(ROOT / "recipes/configs/eval/paper.yaml")
KEY = "sk-test-not-a-real-key-1234"


def _no_answers(out: Path) -> bool:
    return not any((out / b).exists() for b in ("alpaca_eval", "arena_hard", "eval_config.yaml"))


def test_retired_judge_is_refused_by_name_before_any_answer(tmp_path, capsys, monkeypatch):
    """OpenAI shut the paper's judges down on 2026-03-26: naming one on OpenAI's API is one line naming the
    replacement, before any answer is generated and without a request."""
    import core.engines
    from eval.__main__ import main

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(core.engines, "get_engine", lambda *a, **k: pytest.fail("the judge was called"))
    out = tmp_path / "o"
    for judge, extra in (("gpt-4-1106-preview", ["--judge", "paper"]),
                         ("gpt-4-0314", ["--judge_model", "gpt-4-0314", "--benchmarks", "arena_hard"])):
        with pytest.raises(SystemExit) as e:
            main(["run", "--config", PAPER, "--model", "some/model", "--output_dir", str(out), "--report_to", "none",
                  *extra])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: judge {judge} ") and "shut down by OpenAI on 2026-03-26" in err
        assert "--judge gpt-4.1 (judge_model gpt-4.1, alpaca_annotator weighted_alpaca_eval_gpt4.1)" in err
        assert "judge_base_url" in err  # an archived deployment still runs it
        assert _no_answers(out)


@pytest.mark.parametrize("failure", ["model not found", "wrong key", "no server"])
def test_a_judge_that_cannot_judge_is_one_line_before_any_answer(failure, tmp_path, capsys, monkeypatch):
    """A server that does not serve the judge (OpenAI's 404 model_not_found), refuses the key, or is not there:
    one request, then one line naming the judge and what replaces it, and no answer generated. A retired name on a
    server of one's own (an archived deployment) is asked, not refused by name."""
    from types import SimpleNamespace

    from eval.__main__ import main
    from tests.openai_server import serve

    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong" if failure == "wrong key" else KEY)
    seen, out = [], tmp_path / "o"
    judge = "gpt-4-1106-preview" if failure == "model not found" else "gpt-4.1"
    engine = SimpleNamespace(info=SimpleNamespace(model="gpt-4.1"))  # never asked to generate: every request fails
    with serve(engine, api_key=KEY, seen=seen, models=("gpt-4.1",)) as url:
        pass  # a port where no server listens any more
    with serve(engine, api_key=KEY, seen=seen, models=("gpt-4.1",)) as live, pytest.raises(SystemExit) as e:
        main(["run", "--config", EVAL_TINY, "--model", "embedded:smollm2-135m-instruct", "--report_to", "none",
              "--output_dir", str(out), "--judge_engine", "openai", "--judge_model", judge,
              "--judge_base_url", url if failure == "no server" else live])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: judge {judge} (judge_model) cannot judge: ")
    assert {"model not found": "HTTP 404: The model `gpt-4-1106-preview` does not exist",
            "wrong key": "HTTP 401", "no server": f"no server at {url}"}[failure] in err
    assert ("--judge gpt-4.1" if judge != "gpt-4.1" else "judge locally: --judge llama-3.3-70b") in err
    assert seen == ([] if failure == "no server" else ["/v1/chat/completions"])  # one 1-token request
    assert _no_answers(out)


@pytest.mark.slow
def test_results_and_table_say_which_judge_made_them(hf_engine, tmp_path, capsys, monkeypatch):
    """The default judge's settings (gpt-4.1; AlpacaEval by alpaca_eval's weighted_alpaca_eval_gpt4.1, which its
    0.6.6 release lacks) on a server of one's own, recorded per benchmark in results.json; the table marks the
    deltas to the paper's gpt-4-1106-preview numbers. The model answers like its references (SmolLM2 both), so
    every pair is a tie and the server sees only the 1-token check."""
    from eval.__main__ import main
    from eval.table import load_results, write
    from tests.openai_server import serve

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    seen, out = [], tmp_path / "o"
    with serve(hf_engine, api_key=KEY, seen=seen, models=("gpt-4.1",)) as url:
        assert main(["run", "--config", EVAL_TINY, "--model", "embedded:smollm2-135m-instruct", "--report_to", "none",
                     "--output_dir", str(out), "--references_dir", str(tmp_path / "refs"), "--row",
                     "llama-3-8b-instruct", "--benchmarks", "alpaca_eval", "arena_hard", "--alpaca_limit", "2",
                     "--arena_limit", "1", "--alpaca_max_tokens", "2", "--arena_max_tokens", "2",
                     "--judge_engine", "openai", "--judge_model", "gpt-4.1", "--judge_base_url", url,
                     "--alpaca_annotator", "weighted_alpaca_eval_gpt4.1"]) == 0
    assert seen == ["/v1/chat/completions"]
    [r] = load_results([out])
    ae, ah = r["benchmarks"]["alpaca_eval"], r["benchmarks"]["arena_hard"]
    assert {k: ae[k] for k in ("judge", "judge_model", "annotator", "judge_engine", "judge_base_url")} == {
        "judge": "weighted_alpaca_eval_gpt4.1", "judge_model": "gpt-4.1", "annotator": "weighted_alpaca_eval_gpt4.1",
        "judge_engine": "alpaca_eval", "judge_base_url": url}
    assert (ah["judge"], ah["judge_model"], ah["judge_engine"]) == ("openai:gpt-4.1", "gpt-4.1", "openai")
    assert ae["win_rate"] == 50.0 and ah["score"] == 50.0

    capsys.readouterr()
    md = (Path(write([out], tmp_path / "table", only_measured=True)["markdown"])).read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| Llama-3-8B-Instruct"))
    assert "| gpt-4.1 |" in row and "+27.08†" in row and row.endswith("+29.40† |")  # 50 - 22.92, 50 - 20.6
    assert "judged by gpt-4-1106-preview" in md and "† ours were judged by another model" in md


def test_table_marks_deltas_across_judges(tmp_path):
    """A delta is marked where our judge is not the paper's, including results recorded before `judge_model` was."""
    from eval.table import build, load_results, markdown, to_csv

    def bench(ae_judge, ah_judge):
        b = _bench(24.0, 20.0, 1.3, 16.0, 14.5, 17.2)
        b["alpaca_eval"].update(ae_judge)
        b["arena_hard"].update(ah_judge)
        return b

    gpt41 = _result(tmp_path, "gpt41", row="sharegpt", benchmarks=bench(
        {"judge_model": "gpt-4.1", "annotator": "weighted_alpaca_eval_gpt4.1"}, {"judge_model": "gpt-4.1"}))
    old = _result(tmp_path, "old", row="wildchat", benchmarks=bench(
        {"judge": "weighted_alpaca_eval_gpt4_turbo"}, {"judge": "openai:gpt-4-1106-preview"}))
    mixed = _result(tmp_path, "mixed", row="evol-instruct", benchmarks=bench(
        {"judge": "openai:gpt-4-1106-preview"}, {"judge_model": "gpt-4.1"}))
    lines = {ln["measured_model"]: ln for ln in build(load_results([gpt41, old, mixed]), only_measured=True)}
    assert [lines["gpt41"][f"across_judges_{k}"] for k in ("lc", "wr", "arena")] == [True, True, True]
    assert [lines["old"][f"across_judges_{k}"] for k in ("lc", "wr", "arena")] == [False, False, False]
    assert [lines["mixed"][f"across_judges_{k}"] for k in ("lc", "wr", "arena")] == [False, False, True]
    assert lines["old"]["ours_judge_alpaca_eval"] == "gpt-4-1106-preview"
    md = markdown(list(lines.values()))
    row = {m: next(r for r in md.splitlines() if f"| {m} |" in r) for m in lines}
    assert "†" not in row["old"] and row["gpt41"].count("†") == 3 and row["mixed"].count("†") == 1
    assert "| AE2 gpt-4-1106-preview, Arena gpt-4.1 |" in row["mixed"]
    rows = list(csv.DictReader(io.StringIO(to_csv(list(lines.values())))))
    assert {r["measured_model"]: r["ours_annotator"] for r in rows}["gpt41"] == "weighted_alpaca_eval_gpt4.1"


# ---------------------------------------------------------------------------------------------
# A real tiny evaluation: the tiny SFT model and its base, on the same references and judge.

SMALL = EVAL_SMALL  # the `evaluated` fixture (conftest) used these


@pytest.mark.slow
def test_tiny_evaluation_of_the_sft_model(evaluated):
    from core.store import DatasetDir

    r = json.loads((evaluated / "sft" / "results.json").read_text())
    assert r["profile"] == "tiny" and r["model"].endswith("merged")
    ae, ah, lm = (r["benchmarks"][k] for k in ("alpaca_eval", "arena_hard", "lm_eval"))
    assert ae["n_total"] + ae["n_unparsed"] == ae["prompts"] == 8
    assert 0 <= ae["win_rate"] <= 100 and 0 <= ae["length_controlled_winrate"] <= 100
    assert ae["lc_method"].startswith("length_controlled_minimal")
    ann = json.loads((evaluated / "sft" / "alpaca_eval" / "annotations.json").read_text())
    answers = {a["id"]: a["response"] for a in DatasetDir(evaluated / "sft" / "alpaca_eval" / "answers").records()}
    assert [a["output_2"] for a in ann] == [answers[f"{i:04d}"] for i in range(8)]
    assert all(math.isnan(a["preference"]) or 1 <= a["preference"] <= 2 for a in ann)
    # Arena-Hard: both games of every question, each judged or counted as unparsed.
    judgments = DatasetDir(evaluated / "sft" / "arena_hard" / "judgments").records()
    assert sorted((j["id"], j["game"]) for j in judgments) == sorted((q, g) for q in
                                                                     {j["id"] for j in judgments} for g in (1, 2))
    assert ah["n_judgments"] == len(judgments) == 8 and ah["n_unparsed"] <= 8
    assert ah["ci_lower"] <= ah["score"] <= ah["ci_upper"]
    pc = ah["position_consistency"]
    assert math.isnan(pc) or 0 <= pc <= 1
    # The judge ran on every pair whose answers differ (a trained model answers differently).
    judged = [j for j in judgments if not j["identical"]]
    assert judged and all(j["judgment"].startswith("My final verdict is: [[") for j in judged)
    assert 0 <= lm["magpie_tiny_mc"]["acc"] <= 1 and 0 <= lm["magpie_tiny_arith"]["exact_match"] <= 1
    assert list((evaluated / "sft" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_the_base_against_its_own_references_is_even(evaluated):
    """The references are SmolLM2-Instruct's answers with the same decoding: evaluating SmolLM2-Instruct
    itself must give identical answers, hence 50% everywhere, with no judge call."""
    r = json.loads((evaluated / "base" / "results.json").read_text())
    ae, ah = r["benchmarks"]["alpaca_eval"], r["benchmarks"]["arena_hard"]
    assert ae["win_rate"] == 50.0 and ae["length_controlled_winrate"] == 50.0 and ae["n_draws"] == 8
    assert ah["score"] == 50.0 and r["row"] == "llama-3-8b-instruct"


@pytest.mark.slow
def test_rerun_loads_no_model_and_table_is_built(evaluated, trained_sft, monkeypatch, capsys):
    """A finished evaluation started again reads everything back: no model, reference or judge load."""
    import core.engines.registry
    from eval.__main__ import main

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded for a finished evaluation")

    # every engine (a role's build, a shared engine) is built by core.engines.registry.get_engine
    monkeypatch.setattr(core.engines.registry, "get_engine", refuse)
    monkeypatch.setattr(core.engines.registry, "_SHARED", {})
    before = json.loads((evaluated / "sft" / "results.json").read_text())
    assert main(["run", "--config", EVAL_TINY, "--references_dir", str(evaluated / "refs"), *SMALL,
                 "--model", str(trained_sft), "--output_dir", str(evaluated / "sft")]) == 0
    after = json.loads((evaluated / "sft" / "results.json").read_text())
    assert after["benchmarks"]["alpaca_eval"] == before["benchmarks"]["alpaca_eval"]
    assert after["benchmarks"]["arena_hard"] == before["benchmarks"]["arena_hard"]

    capsys.readouterr()
    out = evaluated / "table"
    assert main(["table", str(evaluated / "sft"), str(evaluated / "base"), "--output", str(out),
                 "--report_to", "wandb"]) == 0
    md = (out / "table.md").read_text()
    assert "tiny profile" in md and "smollm2-135m-instruct" in md and before["model_name"] in md
    assert "[table] 20 rows, 2 measured" in capsys.readouterr().out
    # the same table as a W&B table (offline run), with the measured numbers in it
    [table] = out.glob("wandb/offline-run-*/files/media/table/paper_table_*.table.json")
    wt = json.loads(table.read_text())
    assert wt["columns"][:4] == ["label", "measured_model", "paper_lc", "ours_lc"] and len(wt["data"]) == 20
    base_row = next(r for r in wt["data"] if r[1] == "smollm2-135m-instruct")
    assert base_row[0] == "Llama-3-8B-Instruct" and base_row[3] == 50.0


@pytest.mark.slow
def test_killed_judging_resumes_without_losing_or_repeating(evaluated, trained_sft, tmp_path):
    """SIGKILL the evaluation while it judges; the rerun keeps the shards already written, judges the
    rest, and every (question, game) is judged exactly once; no results.json in between."""
    from core.store import DatasetDir
    from eval.__main__ import main

    out = tmp_path / "sft"
    shutil.copytree(evaluated / "sft", out, ignore=shutil.ignore_patterns("judgments", "results.json", "wandb"))
    argv = ["run", "--config", EVAL_TINY, "--references_dir", str(evaluated / "refs"), *SMALL, "--report_to", "none",
            "--model", str(trained_sft), "--output_dir", str(out), "--benchmarks", "alpaca_eval", "arena_hard",
            "--judge_batch_size", "2"]
    first = out / "arena_hard" / "judgments" / "data" / "part-00001.parquet"
    assert kill_when("eval", argv, first), "the evaluation ended before its second Arena-Hard shard"
    assert not (out / "results.json").exists()
    kept = {p.name: p.read_bytes() for p in first.parent.glob("part-*.parquet")}
    assert main(argv) == 0
    for name, data in kept.items():  # what was written before the kill is reused, not redone
        assert (first.parent / name).read_bytes() == data
    judgments = DatasetDir(out / "arena_hard" / "judgments").records()
    pairs = [(j["id"], j["game"]) for j in judgments]
    assert len(pairs) == len(set(pairs)) == 8
    r = json.loads((out / "results.json").read_text())
    assert r["benchmarks"]["arena_hard"]["n_judgments"] == 8
    assert r["benchmarks"]["alpaca_eval"]["prompts"] == 8


# ---------------------------------------------------------------------------------------------
# Configs and recipes.

@pytest.mark.parametrize("profile", ["paper", "tiny"])
def test_eval_configs_parse(profile):
    from core.config import parse
    from eval.config import ALL

    margs, eargs, _, bargs, _ = parse(["--config", str(ROOT / f"recipes/configs/eval/{profile}.yaml")], ALL)
    assert eargs.profile == profile and set(eargs.benchmarks) == {"alpaca_eval", "arena_hard", "lm_eval"}
    assert bargs.alpaca_repetition_penalty == 1.2  # paper: greedy with repetition penalty 1.2
    if profile == "paper":
        assert (bargs.alpaca_prompts, bargs.reference, margs.engine) == ("hub", "hub", "vllm")


def test_the_default_judge_exists_and_the_papers_is_kept_by_name(tmp_path):
    """gpt-4.1 judges by default (AlpacaEval's weighted_alpaca_eval_gpt4.1, Arena-Hard v2.0's judge); `--judge paper`
    is the paper's gpt-4-1106-preview, whose annotator config is the one alpaca_eval ships."""
    import yaml

    from core.config import parse
    from eval.config import ALL
    from eval.judges import alpaca_annotator_configs, alpaca_annotator_model, write_alpaca_annotator

    _, _, jargs, _, _ = parse(["--config", PAPER], ALL)
    assert (jargs.judge_engine, jargs.judge_model, jargs.alpaca_annotator) == \
        ("openai", "gpt-4.1", "weighted_alpaca_eval_gpt4.1")
    assert alpaca_annotator_model(jargs.alpaca_annotator) == "gpt-4.1"
    # The package's protocol with another model: its prompt, one token, top-5 log-probabilities, weighted parser.
    [new] = alpaca_annotator_configs("weighted_alpaca_eval_gpt4.1").values()
    [old] = alpaca_annotator_configs("weighted_alpaca_eval_gpt4_turbo").values()
    assert {**new, "completions_kwargs": {**new["completions_kwargs"], "model_name": "gpt-4-1106-preview"}} == old
    # alpaca_eval 0.6.6 lacks the config: the file written for its annotator finds the package's prompt.
    [cfg] = yaml.safe_load(write_alpaca_annotator(jargs.alpaca_annotator, tmp_path, "http://x/v1").read_text()).values()
    assert Path(cfg["prompt_template"]).is_file() and cfg["completions_kwargs"]["openai_api_base"] == "http://x/v1"

    _, _, paper, _, _ = parse(["--config", PAPER, "--judge", "paper"], ALL)
    assert (paper.judge_model, paper.alpaca_annotator) == ("gpt-4-1106-preview", "weighted_alpaca_eval_gpt4_turbo")
    assert alpaca_annotator_model(paper.alpaca_annotator) == "gpt-4-1106-preview"
    # a judge of one's own judges AlpacaEval on its weighted prompt; a named judge and another model contradict
    _, _, own, _, _ = parse(["--config", PAPER, "--judge_engine", "vllm", "--judge_model", "m/x"], ALL)
    assert (own.judge_model, own.alpaca_annotator) == ("m/x", "engine")
    with pytest.raises(ValueError, match="command line: judge paper means judge_model gpt-4-1106-preview"):
        parse(["--config", PAPER, "--judge", "paper", "--judge_model", "gpt-4.1"], ALL)
    with pytest.raises(ValueError, match=r"judge must be one of gpt-4.1, gpt-5-nano, paper, .* \(eval/data/judges.yaml\)"):
        parse(["--config", PAPER, "--judge", "gpt-4"], ALL)


def test_every_registered_judge_fills_its_settings_and_names_itself():
    """eval/data/judges.yaml is the one registry: each name gives its settings (a key the config sets keeps its
    value), each annotator it names resolves to a config that calls the judge's model, a retired one is marked,
    and a judge given by its keys alone is recorded under its registry name."""
    from core.config import parse
    from eval.config import ALL
    from eval.judges import DEFAULT_JUDGE, JUDGES, RETIRED, alpaca_annotator_model, judge_name_of

    assert DEFAULT_JUDGE == "gpt-4.1" and JUDGES[DEFAULT_JUDGE]["status"] == "serves"
    for name, entry in JUDGES.items():
        _, _, j, _, _ = parse(["--config", PAPER, "--judge", name], ALL)
        for key, value in entry["settings"].items():
            assert getattr(j, key) == value, (name, key)
        if j.alpaca_annotator != "engine":
            assert alpaca_annotator_model(j.alpaca_annotator) == j.judge_model, name
        assert judge_name_of(j) == name
        assert (entry["status"] == "retired") == (j.judge_model in RETIRED), name
    _, _, j, _, _ = parse(["--config", PAPER, "--judge", "llama-3.3-70b", "--judge_tensor_parallel_size", "8"], ALL)
    assert (j.judge_engine, j.judge_tensor_parallel_size, j.alpaca_annotator) == ("vllm", 8, "engine")
    _, _, tiny, _, _ = parse(["--config", EVAL_TINY], ALL)  # spelled out as keys, recognised by them
    assert judge_name_of(tiny) == "smollm2-135m" and tiny.judge_prefill == "label"
    _, _, own, _, _ = parse(["--config", EVAL_TINY, "--judge_model", "embedded:smollm2-360m-instruct"], ALL)
    assert judge_name_of(own) is None


def test_paper_rows_are_the_papers_and_name_the_recipes():
    from eval.table import paper_rows

    rows, source = paper_rows()
    assert "Table 1" in source and len(rows) == 19
    assert all(isinstance(r[k], float) for r in rows for k in ("lc", "wr", "sd", "arena"))
    by_id = {r["id"]: r for r in rows}
    assert (by_id["magpie-air-300k-filtered"]["lc"], by_id["magpie-pro-300k-filtered"]["wr"],
            by_id["llama-3-8b-instruct"]["arena"]) == (22.66, 29.47, 20.6)
    trained_here = [r["id"] for r in rows if r["group"] != "instruct" and "dpo" not in r["id"]]
    for rid in trained_here:  # every SFT row is a recipe of this repo
        assert (ROOT / "recipes/configs/sft" / f"{rid}.yaml").exists(), rid
    for rid in (r["id"] for r in rows if "dpo" in r["id"]):  # and every +DPO row a DPO recipe
        assert (ROOT / "recipes/configs/dpo" / f"{rid}.yaml").exists(), rid


def test_recipe_scripts_are_valid_bash():
    for script in sorted((ROOT / "recipes").glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)
    air = (ROOT / "recipes/magpie_air.sh").read_text()
    assert "run_eval runs/magpie_air air" in air  # the main job ends with its evaluation and table row
    # the table holds every finished evaluation of the run folder (eval/, and eval_dpo/ for the +DPO row)
    assert 'python -m eval table "${finished[@]}" --output "$dir"' in (ROOT / "recipes/bootstrap.sh").read_text()
    assert "run_report runs/magpie_air" in air  # and then its report


@pytest.mark.slow
def test_engine_judge_reproduces_alpaca_evals_own_annotator(evaluated, trained_sft, hf_engine, tmp_path, monkeypatch):
    """The paper's AlpacaEval 2 judge as alpaca_eval runs it (`weighted_alpaca_eval_gpt4_turbo`: one token,
    top-5 log-probabilities, its own prompt and order randomisation) and our engine judge, both asking
    SmolLM2 behind a real OpenAI-compatible server, give the same preferences, pair by pair."""
    from eval.__main__ import main
    from tests.openai_server import serve

    key = "sk-test-not-a-real-key-5678"

    def copy(name):
        shutil.copytree(evaluated / "sft", tmp_path / name, ignore=shutil.ignore_patterns(
            "judgments", "results.json", "wandb", "lm_eval", "arena_hard", "annotations.json"))
        return tmp_path / name

    common = ["run", "--config", EVAL_TINY, "--references_dir", str(evaluated / "refs"), *SMALL, "--report_to", "none",
              "--model", str(trained_sft), "--benchmarks", "alpaca_eval"]
    with serve(hf_engine, api_key=key) as url:
        theirs = copy("alpaca_eval_annotator")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_BASE": url, "OPENAI_API_KEY": key}
        proc = subprocess.run([sys.executable, "-m", "eval", *common, "--output_dir", str(theirs),
                               "--alpaca_annotator", "weighted_alpaca_eval_gpt4_turbo"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ours = copy("engine_judge")
        monkeypatch.setenv("OPENAI_API_KEY", key)
        assert main([*common, "--output_dir", str(ours), "--judge_engine", "openai", "--judge_base_url", url,
                     "--judge_model", "gpt-4-1106-preview"]) == 0
    a = {x["instruction"]: x["preference"] for x in json.loads((theirs / "alpaca_eval/annotations.json").read_text())}
    b = {x["instruction"]: x["preference"] for x in json.loads((ours / "alpaca_eval/annotations.json").read_text())}
    assert a.keys() == b.keys() and len(a) == 8
    assert sum(not math.isnan(v) and v != 1.5 for v in a.values()) >= 4  # pairs the judge really weighed
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-6), k
    ra = json.loads((theirs / "results.json").read_text())["benchmarks"]["alpaca_eval"]
    rb = json.loads((ours / "results.json").read_text())["benchmarks"]["alpaca_eval"]
    assert ra["judge"] == "weighted_alpaca_eval_gpt4_turbo" and rb["judge"].startswith("openai:")
    assert ra["win_rate"] == pytest.approx(rb["win_rate"], abs=1e-6)


def test_summary_line_separates_lm_eval_time_from_the_total():
    from eval.__main__ import summary_line

    r = {"model_name": "m", "seconds": 321.0, "benchmarks": {
        "alpaca_eval": {"length_controlled_winrate": 50.0, "win_rate": 40.77, "standard_error": 5.2, "n_total": 24},
        "lm_eval": {"magpie_tiny_mc": {"acc": 0.6}, "magpie_tiny_arith": {"exact_match": 0.5}, "seconds": 26.4}}}
    line = summary_line(r, Path("runs/x/eval"))
    assert "AlpacaEval LC 50.00 WR 40.77±5.20 (24 prompts, 0 unparsed)" in line
    assert "lm-eval 2 tasks (26s); 321s in all -> runs/x/eval/results.json" in line
