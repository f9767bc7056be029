"""`python -m synth plan`: a forecast of a synthesis job from a short calibration run of the job itself."""
import json
import re

import pytest
from conftest import TINY


def test_forecast_scales_what_grows_and_keeps_what_does_not():
    from synth.plan import forecast

    times = [{"stage": "instructions", "wall_seconds": 30.0, "seconds": 20.0, "tokens_this_run": 1000},
             {"stage": "tag", "wall_seconds": 12.0, "records": 40},  # no shard time: all of it grows
             {"stage": "preferences", "wall_seconds": 10.0, "seconds": 10.0, "tokens_this_run": 500}]
    rows = {r["stage"]: r for r in forecast(times, scale=3.0, pref_scale=2.0, gpus={"instructions": 4})}
    assert rows["instructions"]["seconds"] == 10.0 + 20.0 * 3 and rows["instructions"]["tokens"] == 3000
    assert rows["instructions"]["gpu_hours"] == pytest.approx(70.0 / 3600 * 4)
    assert rows["tag"]["seconds"] == 36.0 and rows["tag"]["tokens"] is None and rows["tag"]["gpus"] == 0
    assert rows["preferences"]["seconds"] == 20.0 and rows["preferences"]["tokens"] == 1000


def test_step_costs_recover_a_known_cost_and_engines_run_their_batches():
    """The per-step cost fitted from steps that cost exactly 40 ms + 2 ms a sequence + 0.1 ms a prompt token; then
    the two batch shapes: vLLM keeps up to `cap` sequences running, hf runs batches of `cap` for their longest."""
    from synth.plan import engine_seconds, step_costs

    log = [{"step": "e", "kind": "vllm", "cap": 256, "k": k, "n": 1, "p": p, "dt": 0.040 + 0.002 * k + 0.0001 * p,
            "t": 0.0} for k, p in [(16, 900), (16, 0), (12, 0), (8, 0), (3, 40), (1, 0), (2, 0), (7, 0)]]
    log.append({"step": "h", "kind": "hf", "cap": 4, "k": 4, "n": 10, "p": 80, "dt": 10 * 0.05, "t": 0.0})
    costs = step_costs(log)
    assert costs["e"] == pytest.approx((0.040, 0.002, 0.0001))
    assert costs["h"] == pytest.approx((0.05, 0.0, 0.0))  # one batch: a flat cost per step is all it can tell
    a, b, c = 1.0, 0.5, 0.0
    # vLLM, room for all: the longest answer's steps, each as full as the sequences still running
    assert engine_seconds("vllm", 8, [(5, 2), (5, 4)], (a, b, c)) == 2 * (a + 2 * b) + 2 * (a + b)
    # one at a time: every answer's steps, one after the other; the prompts' prefill on top
    assert engine_seconds("vllm", 1, [(5, 2), (5, 4)], (a, b, 0.1)) == pytest.approx(6 * (a + b) + 0.1 * 10)
    # hf: batches of 2 by prompt length, each as long as its longest answer, prompts padded to the longest
    assert engine_seconds("hf", 2, [(9, 1), (3, 5), (4, 2)], (a, b, 0.1)) == pytest.approx(
        5 * (a + 2 * b) + 0.1 * 2 * 4 + 1 * (a + b) + 0.1 * 9)


def test_forecast_from_the_step_log_grows_the_steps_as_the_engine_would():
    """A calibration of 4 answers in one vLLM batch: steps of 4, 3, 2, 1 sequences. The job has 3x the answers;
    its steps hold 12, 9, 6, 3, each a little dearer, not three times as many. The engine's build stays, the rest
    of the stage grows 3x."""
    from synth.plan import forecast

    cost = lambda k: 0.05 + 0.001 * k  # noqa: E731
    log = [{"fixed": "vllm engine", "dt": 5.0, "t": 105.0}]
    log += [{"step": "e", "kind": "vllm", "cap": 256, "k": k, "n": 1, "p": 0, "dt": cost(k), "t": 106.0 + i}
            for i, k in enumerate([4, 3, 2, 1])]
    log.append({"requests": "e", "pg": [[10, 1], [10, 2], [10, 3], [10, 4]], "t": 110.0})
    stepping = sum(cost(k) for k in [4, 3, 2, 1])
    times = [{"stage": "responses", "wall_seconds": 11.0, "at": 111.0, "seconds": 6.0}]
    [row] = forecast(times, scale=3.0, pref_scale=3.0, gpus={}, log=log)
    job = sum(cost(k) for k in [12, 9, 6, 3])
    assert row["fixed_seconds"] == 5.0
    assert row["seconds"] == pytest.approx(5.0 + (11.0 - 5.0 - stepping) * 3 + job)
    assert row["seconds"] < 5.0 + 6.0 * 3  # what scaling the shards' time by the job's size says
    # without the log, the old rule: the shards' seconds grow, the rest is fixed
    assert forecast(times, 3.0, 3.0, {})[0]["seconds"] == 5.0 + 6.0 * 3


@pytest.mark.slow
def test_plan_calibrates_on_the_job_itself_and_prints_every_stage(tiny_run, capsys):
    """A run writes each stage's times beside its outputs (the session's tiny run); `plan` runs the job on a
    calibration share in a folder of its own and forecasts each configured stage."""
    from synth.__main__ import main

    lines = [json.loads(x) for x in (tiny_run / "stage_times.jsonl").read_text().splitlines()]
    first = lines[:2]  # the run that made it (tests that run it again append theirs: "already complete")
    assert [x["stage"] for x in first] == ["instructions", "responses"]
    assert {x["stage"] for x in lines} == {"instructions", "responses"}
    assert all(0 < x["seconds"] <= x["wall_seconds"] for x in first) and first[1]["pairs"] > 0
    argv = ["--config", TINY, "--stages", "instructions", "responses", "--total_prompts", "8", "--n", "4",
            "--max_tokens", "16", "--response_max_tokens", "16"]
    assert main(["plan", *argv, "--calibrate", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[plan] 8 instructions, forecast from a calibration on 4")
    for stage in ("instructions", "responses"):
        assert any(line.startswith(stage) for line in out.splitlines())
    assert "paper, Air-3M (3,000,000 pairs): 206 GPU-hours" in out
    grown = re.search(r"engine time grown from ([\d,]+) engine steps of the calibration", out)
    assert grown and int(grown.group(1).replace(",", "")) >= 2  # a step at least in each of the two stages
    with pytest.raises(SystemExit):
        main(["plan", *argv, "--calibrate", "zero"])
