"""eval/harness.py on the real embedded SmolLM2 and the repo's tiny lm-eval tasks (eval/tasks/)."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from eval import harness
from eval.harness import paper_tasks, run_harness, summarize

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "eval/tasks"
MODEL = "embedded:smollm2-135m-instruct"
KW = {"include_path": str(TASKS), "batch_size": 8}


def n_lines(path):
    return sum(1 for line in Path(path).read_text().splitlines() if line.strip())


N_MC = n_lines(TASKS / "data/magpie_tiny_mc.jsonl")
N_ARITH = n_lines(TASKS / "data/magpie_tiny_arith.jsonl")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run of the `magpie_tiny` group, started from an unrelated working directory (the tasks'
    data paths must not depend on it)."""
    out = tmp_path_factory.mktemp("harness") / "job"
    elsewhere = tmp_path_factory.mktemp("cwd")
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        summary = run_harness(MODEL, out, ["magpie_tiny"], **KW)
    finally:
        os.chdir(cwd)
    return out, summary


def test_tiny_task_data():
    mc = [json.loads(line) for line in (TASKS / "data/magpie_tiny_mc.jsonl").read_text().splitlines()]
    assert 20 <= len(mc) <= 24
    assert all(len(d["choices"]) == 4 and 0 <= d["answer"] < 4 for d in mc)
    assert len({d["answer"] for d in mc}) == 4  # gold answers spread over all positions
    arith = [json.loads(line) for line in (TASKS / "data/magpie_tiny_arith.jsonl").read_text().splitlines()]
    assert len(arith) == 12 and all(d["answer"].isdigit() for d in arith)


@pytest.mark.slow
def test_results_json(tiny_run):
    out, summary = tiny_run
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["model"] == MODEL and res["config"]["backend"] == "hf"
    assert res["config"]["tasks"] == ["magpie_tiny"] and res["config"]["apply_chat_template"] is True
    assert res["config"]["versions"]["lm_eval"].startswith("0.4.")
    assert set(res["configs"]) == {"magpie_tiny_mc", "magpie_tiny_arith"}
    assert res["n-samples"]["magpie_tiny_mc"]["effective"] == N_MC
    assert res["n-samples"]["magpie_tiny_arith"]["effective"] == N_ARITH
    assert res["group_subtasks"]["magpie_tiny"] == ["magpie_tiny_mc", "magpie_tiny_arith"]
    mc, arith = res["summary"]["magpie_tiny_mc"], res["summary"]["magpie_tiny_arith"]
    assert set(mc) == {"acc", "acc_norm"} and set(arith) == {"exact_match"}
    for v in (*mc.values(), *arith.values()):
        assert 0.0 <= v <= 1.0
    assert mc["acc"] > 0.25  # an aligned chat model beats chance on everyday questions
    assert summary == {**res["summary"], "seconds": res["seconds"]} and summary["seconds"] > 0
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_samples_are_chat_templated(tiny_run):
    out, _ = tiny_run
    mc = [json.loads(line) for line in (out / "samples_magpie_tiny_mc.jsonl").read_text().splitlines()]
    arith = [json.loads(line) for line in (out / "samples_magpie_tiny_arith.jsonl").read_text().splitlines()]
    assert len(mc) == N_MC and len(arith) == N_ARITH
    for s in mc:
        assert len(s["arguments"]) == 4  # one loglikelihood request per choice
        ctx, cont = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
        assert "<|im_start|>user\nQuestion: " in ctx and ctx.endswith("<|im_start|>assistant\n")
        assert cont == s["doc"]["choices"][0]  # with a chat template the choice follows the turn, no space
        assert s["acc"] in (0.0, 1.0)
    for s in arith:
        prompt = s["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.startswith("<|im_start|>") and s["doc"]["question"] in prompt
        assert s["filter"] == "last_number" and s["target"] == s["doc"]["answer"]
        assert "<|im_end|>" not in s["resps"][0][0]


@pytest.mark.slow
def test_resume_does_not_recompute(tiny_run, monkeypatch):
    out, summary = tiny_run
    before = (out / "results.json").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(harness, "resolve", boom)
    import lm_eval
    monkeypatch.setattr(lm_eval, "simple_evaluate", boom)
    again = run_harness(MODEL, out, ["magpie_tiny"], **KW)
    assert again == summary
    assert (out / "results.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_config_mismatch_raises(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="different harness job") as e:
        run_harness(MODEL, out, ["magpie_tiny"], limit=3, **KW)
    assert str(out) in str(e.value) and "limit" in str(e.value)
    with pytest.raises(ValueError, match="num_fewshot"):
        run_harness(MODEL, out, ["magpie_tiny"], num_fewshot=1, **KW)


def test_unknown_task_is_one_helpful_line(tmp_path):
    with pytest.raises(ValueError) as e:
        run_harness(MODEL, tmp_path / "job", ["magpie_tiny_mcq"], **KW)
    msg = str(e.value)
    assert "\n" not in msg and "'magpie_tiny_mcq'" in msg
    assert "magpie_tiny_mc" in msg.split("close matches:")[1] and "--include_path" in msg
    assert not (tmp_path / "job").exists()
    # without include_path the repo's tasks are unknown, and the message says where they live
    with pytest.raises(ValueError, match="include_path") as e:
        run_harness(MODEL, tmp_path / "job", ["magpie_tiny"])
    assert str(TASKS) in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
        run_harness(MODEL, tmp_path / "job", ["magpie_tiny"], backend="vllm",
                    model_args={"tensor_parallel_size": 2}, **KW)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        run_harness(MODEL, tmp_path, ["magpie_tiny"], backend="sglang")
    with pytest.raises(ValueError, match="apply_chat_template"):
        run_harness(MODEL, tmp_path, ["magpie_tiny"], apply_chat_template=False, fewshot_as_multiturn=True)


def test_summarize_keeps_filters_only_where_needed():
    results = {"results": {
        "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1,
                  "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": 0.1},
        "arc": {"alias": "arc", "sample_len": 10, "acc,none": 0.5, "acc_stderr,none": "N/A"},
        "group": {"alias": "group"},
    }}
    assert summarize(results) == {
        "gsm8k": {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.5},
        "arc": {"acc": 0.5},
    }


def test_paper_tasks_are_known_to_lm_eval():
    from eval.harness import _task_manager

    assert dict(paper_tasks()) == {"mmlu": 5, "arc_challenge": 25, "hellaswag": 10, "truthfulqa_mc2": 0,
                                   "winogrande": 5, "gsm8k": 5, "ifeval": 0}
    known = set(_task_manager(()).all_tasks)  # lm-eval's own TaskManager, without our include path
    assert {t for t, _ in paper_tasks()} <= known
