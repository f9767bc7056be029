"""Judges a user can run today: what they cost before they are paid, what they cost after, and existing answers
judged again by another judge (eval/cost.py, eval/data/judges.yaml, `python -m eval rejudge`), against a real
OpenAI-compatible server on 127.0.0.1 serving the embedded model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import EVAL_TINY

KEY = "sk-test-not-a-real-key-1234"
SERVED = "smol-judge"  # the served name: no tokenizer of that name exists, judge_tokenizer says what it is
TOKENIZER = "embedded:smollm2-135m-instruct"


def _prices(tmp_path: Path, usd_per_mtok: float) -> Path:
    p = tmp_path / "prices.yaml"
    p.write_text(yaml.safe_dump({"as_of": "2026-12-01", "source": "this test",
                                 "models": {SERVED: {"input": usd_per_mtok, "output": usd_per_mtok}}}))
    return p


def test_estimate_counts_each_pair_with_the_judges_own_chat_template(smol_tokenizer):
    """The estimate of a prompt set is the judge prompt rendered with the judge's chat template around each pair,
    counted as the server counts it (its tokenizer, no special tokens added): exact for one-token judges, an
    upper bound for a judge whose output is capped; identical pairs are ties without a call."""
    from core.config import parse
    from core.engines.base import encode_prompt
    from eval.benchmarks import HeadToHead, get_benchmark
    from eval.config import ALL
    from eval.cost import estimate

    _, _, jargs, _, _ = parse(["--config", EVAL_TINY], ALL)
    bench = get_benchmark("alpaca_eval")
    prompts = [{"id": "a", "instruction": "Name a colour.", "index": 0},
               {"id": "b", "instruction": "Add 2 and 3.", "index": 1}]
    answers = {"a": {"response": "Blue."}, "b": {"response": "5"}}
    refs = {"a": "Red is a colour.", "b": "5"}  # b: identical, no call
    h = HeadToHead(prompts, answers, refs, "m", "r", Path("."))
    [e] = estimate(jargs, [bench], [h])
    prompt = bench.judge_prompt(max_tokens=8, prefill="none", prompt_file=None, top_logprobs=5)
    [item] = [it for it in bench.items(h, 0) if it["answer_a"] != it["answer_b"]]
    rendered = smol_tokenizer.apply_chat_template(prompt.conversation(item), tokenize=False, add_generation_prompt=True)
    exact = len(encode_prompt(smol_tokenizer, rendered))
    assert (e.calls, e.output_tokens, e.usd, e.basis) == (1, 1, None, "answers")
    assert abs(e.input_tokens - exact) <= 3, (e.input_tokens, exact)  # the answers counted apart from the frame
    assert e.counted_with == "embedded:smollm2-135m-instruct"


def test_price_table_is_dated_and_a_bad_one_is_named(tmp_path):
    from eval.cost import load_prices

    prices = load_prices(None)
    assert str(prices["as_of"]) and prices["models"]["gpt-4.1"] == {"input": 2.0, "output": 8.0,
                                                                    "tokenizer": "o200k_base"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  gpt-x: {input: cheap}\n")
    with pytest.raises(ValueError, match="bad.yaml: every entry under `models` needs numeric input and output"):
        load_prices(str(bad))


@pytest.mark.slow
def test_rejudge_asks_for_yes_then_costs_what_it_estimated(evaluated, hf_engine, tmp_path, monkeypatch, capsys):
    """An evaluation's answers judged again by a judge on a server of one's own: above judge_max_usd the run stops
    before its first request, with one line asking for --yes; with --yes it sends only judge requests (the model
    under test does not answer again), the estimate on the answers is within 10% of the tokens the server saw, the
    run records exactly what the server reported, and every number says which judge made it."""
    from eval.__main__ import main
    from tests.openai_server import serve

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    src, out = evaluated / "sft", tmp_path / "rejudged"
    argv = ["rejudge", str(src), "--judge_engine", "openai", "--judge_model", SERVED, "--judge_tokenizer", TOKENIZER,
            "--judge_prices", str(_prices(tmp_path, 1000.0)), "--judge_prefill", "none", "--arena_judge_max_tokens",
            "24", "--judge_max_usd", "0.01", "--output_dir", str(out), "--report_to", "none"]
    seen, usage = [], []
    with serve(hf_engine, api_key=KEY, seen=seen, usage=usage) as url:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--judge_base_url", url])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert "more than judge_max_usd $0.01" in err and "--yes" in err
        assert seen == [] and not (out / "alpaca_eval" / "judgments").exists()
        assert not (out / "eval_config.yaml").exists()  # written once the run's checks pass

        assert main([*argv, "--judge_base_url", url, "--yes"]) == 0
    printed = capsys.readouterr().out
    assert "[eval] judge cost estimate (prices of 2026-12-01)" in printed

    r = json.loads((out / "results.json").read_text())
    probe, *judging = usage  # the first request is the 1-token check that the judge can judge
    assert probe["completion_tokens"] <= 1 and len(judging) > 0
    # the model under test answered nothing: every request was the judge's, and the answers are the original's
    for b in ("alpaca_eval", "arena_hard"):
        original = json.loads((src / b / "answers" / "manifest.json").read_text())
        assert json.loads((out / b / "answers" / "manifest.json").read_text())["fingerprint"] == original["fingerprint"]
    est = {b: r["benchmarks"][b]["judge_estimate"] for b in ("alpaca_eval", "arena_hard")}
    used = {b: r["benchmarks"][b]["judge_usage"] for b in ("alpaca_eval", "arena_hard")}
    server_tokens = sum(u["prompt_tokens"] + u["completion_tokens"] for u in judging)
    estimated = sum(x["input_tokens"] + x["output_tokens"] for x in est.values())
    print(f"[cost] estimated {estimated} tokens, the server saw {server_tokens}")
    assert abs(estimated - server_tokens) <= 0.10 * server_tokens, (estimated, server_tokens)
    assert sum(x["calls"] for x in est.values()) == sum(x["calls"] for x in used.values()) == len(judging)
    assert sum(x["input_tokens"] + x["output_tokens"] for x in used.values()) == server_tokens
    for b in ("alpaca_eval", "arena_hard"):
        res = r["benchmarks"][b]
        assert (res["judge_model"], res["judge_engine"], res["judge_name"]) == (SERVED, "openai", None)
        assert res["version"] == {"alpaca_eval": "2.0", "arena_hard": "v0.1"}[b]
        assert est[b]["judge_model"] == SERVED and est[b]["usd"] > 0
    assert yaml.safe_load((out / "eval_config.yaml").read_text())["rejudged_from"] == r["rejudged_from"] == str(src)


def test_rejudge_of_an_evaluation_without_its_config_says_what_to_do(tmp_path, capsys):
    from eval.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["rejudge", str(tmp_path), "--judge", "gpt-5-nano"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{tmp_path} has no eval_config.yaml" in err
