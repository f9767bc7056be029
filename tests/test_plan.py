"""`python -m synth plan`: a forecast of a synthesis job from a short calibration run of the job itself."""
import json

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
    with pytest.raises(SystemExit):
        main(["plan", *argv, "--calibrate", "zero"])
