"""eval/harness.py on the real embedded SmolLM2 and the repo's lm-eval tasks (eval/tasks/)."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from eval import harness
from eval.harness import run_harness, summarize

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "eval/tasks"
MODEL = "embedded:smollm2-135m-instruct"
KW = {"batch_size": 8}


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


@pytest.fixture
def no_model(monkeypatch):
    """Building an lm-eval model raises: a run that would load one fails with "model built"."""
    from lm_eval.models.huggingface import HFLM

    def boom(*a, **k):
        raise AssertionError("model built")

    monkeypatch.setattr(HFLM, "__init__", boom)


def results_file(out):
    files = sorted(Path(out).glob("results_*.json"))
    assert len(files) == 1, files
    return files[0], json.loads(files[0].read_text())


def test_tiny_task_data():
    mc = [json.loads(line) for line in (TASKS / "data/magpie_tiny_mc.jsonl").read_text().splitlines()]
    assert 20 <= len(mc) <= 24
    assert all(len(d["choices"]) == 4 and 0 <= d["answer"] < 4 for d in mc)
    assert len({d["answer"] for d in mc}) == 4  # gold answers spread over all positions
    arith = [json.loads(line) for line in (TASKS / "data/magpie_tiny_arith.jsonl").read_text().splitlines()]
    assert len(arith) == 12 and all(d["answer"].isdigit() for d in arith)


@pytest.mark.slow
def test_tracker_results_file(tiny_run):
    out, summary = tiny_run
    path, res = results_file(out)
    assert path.parent == out  # no model-name folder in between
    assert res["job"]["model"] == MODEL and res["job"]["backend"] == "hf"
    assert res["job"]["tasks"] == ["magpie_tiny"] and res["job"]["apply_chat_template"] is True
    assert res["lm_eval_version"].startswith("0.4.") and res["fewshot_as_multiturn"] is True
    assert res["chat_template"] and "<|im_start|>" in res["chat_template"]
    assert set(res["configs"]) == {"magpie_tiny_mc", "magpie_tiny_arith"}
    assert res["n-samples"]["magpie_tiny_mc"]["effective"] == N_MC
    assert res["n-samples"]["magpie_tiny_arith"]["effective"] == N_ARITH
    assert res["group_subtasks"]["magpie_tiny"] == ["magpie_tiny_mc", "magpie_tiny_arith"]
    assert set(res["task_hashes"]) == {"magpie_tiny_mc", "magpie_tiny_arith"}  # hashed from the samples
    mc, arith = summarize(res)["magpie_tiny_mc"], summarize(res)["magpie_tiny_arith"]
    assert set(mc) == {"acc", "acc_norm"} and set(arith) == {"exact_match"}
    for v in (*mc.values(), *arith.values()):
        assert 0.0 <= v <= 1.0
    assert mc["acc"] > 0.25  # an aligned chat model beats chance on everyday questions
    assert summary == {**summarize(res), "seconds": round(float(res["total_evaluation_time_seconds"]), 2)}
    assert summary["seconds"] > 0


@pytest.mark.slow
def test_tracker_samples_are_chat_templated(tiny_run):
    out, _ = tiny_run
    date = results_file(out)[0].stem.removeprefix("results_")
    mc = [json.loads(line) for line in (out / f"samples_magpie_tiny_mc_{date}.jsonl").read_text().splitlines()]
    arith = [json.loads(line) for line in (out / f"samples_magpie_tiny_arith_{date}.jsonl").read_text().splitlines()]
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
def test_finished_job_loads_no_model(tiny_run, no_model, tmp_path):
    out, summary = tiny_run
    files = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_harness(MODEL, out, ["magpie_tiny"], **KW) == summary
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == files  # nothing written
    # The same guard catches a job that has to run: here the model would be built.
    with pytest.raises(AssertionError, match="model built"):
        run_harness(MODEL, tmp_path / "new", ["magpie_tiny"], **KW)


@pytest.mark.slow
def test_job_with_missing_samples_is_redone(tiny_run, no_model, tmp_path):
    """The tracker writes the results file before the samples: results whose samples were cut short (a killed
    run) are not a finished job."""
    out, _ = tiny_run
    copy = tmp_path / "job"
    shutil.copytree(out, copy)
    samples = next(copy.glob("samples_magpie_tiny_arith_*.jsonl"))
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(AssertionError, match="model built"):
        run_harness(MODEL, copy, ["magpie_tiny"], **KW)


@pytest.mark.slow
def test_config_mismatch_raises(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="different harness job") as e:
        run_harness(MODEL, out, ["magpie_tiny"], limit=3, **KW)
    assert str(out) in str(e.value) and "limit" in str(e.value)
    with pytest.raises(ValueError, match="num_fewshot"):
        run_harness(MODEL, out, ["magpie_tiny"], num_fewshot=1, **KW)


def test_results_of_another_writer_are_refused(tmp_path):
    (tmp_path / "results_2024-01-01T00-00-00.000000.json").write_text(json.dumps({"results": {}}))
    with pytest.raises(ValueError, match="not written by eval.harness") as e:
        run_harness(MODEL, tmp_path, ["magpie_tiny"], **KW)
    assert "use another output_dir" in str(e.value) and "\n" not in str(e.value)


def test_unknown_task_is_one_helpful_line(tmp_path):
    with pytest.raises(ValueError) as e:
        run_harness(MODEL, tmp_path / "job", ["magpie_tiny_mcq"], **KW)
    msg = str(e.value)
    assert "\n" not in msg and "'magpie_tiny_mcq'" in msg
    assert "magpie_tiny_mc" in msg.split("close matches:")[1]
    assert f"lm-eval ls tasks --include_path {TASKS}" in msg and "include_path" in msg.split("(")[-1]
    assert not (tmp_path / "job").exists()


def test_vllm_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without it
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


def test_paper_group_is_table3_with_its_shots():
    """lm-eval's own TaskManager and group expansion on eval/tasks/magpie_paper.yaml, stopped where a task would
    download its data (and import its hooks: IFEval's need the gpu extra): each leaf is its YAML config."""
    from types import SimpleNamespace

    from lm_eval.api.group import Group
    from lm_eval.tasks._factory import TaskFactory
    from lm_eval.tasks._yaml_loader import load_yaml

    class Configs(TaskFactory):
        def _build_task(self, entry, overrides):
            config = {**load_yaml(entry.yaml_path, resolve_func=False), **(overrides or {})}
            return SimpleNamespace(task_name=config["task"], config=config)

    def leaves(group):
        for child in group:
            yield from leaves(child) if isinstance(child, Group) else [child]

    index = harness._task_manager(()).task_index  # the harness's TaskManager: eval/tasks is on its path
    paper = Configs().build(index["magpie_paper"], registry=dict(index))
    assert paper.child_names == ["mmlu", "arc_challenge", "hellaswag", "truthfulqa_mc2", "winogrande", "gsm8k",
                                 "ifeval"]
    shots = {t.task_name: t.config["num_fewshot"] for t in leaves(paper)}
    mmlu = {t: n for t, n in shots.items() if t.startswith("mmlu_")}
    assert len(mmlu) == 57 and set(mmlu.values()) == {5}
    assert {t: n for t, n in shots.items() if t not in mmlu} == {
        "arc_challenge": 25, "hellaswag": 10, "truthfulqa_mc2": 0, "winogrande": 5, "gsm8k": 5, "ifeval": 0}
    datasets = {t.config["dataset_path"] for t in leaves(paper)}
    assert datasets == {"cais/mmlu", "allenai/ai2_arc", "Rowan/hellaswag", "truthfulqa/truthful_qa",
                        "allenai/winogrande", "openai/gsm8k", "google/IFEval"}


# ---------------------------------------------------------------------------------------------
# IFBench (eval/tasks/ifbench.yaml) and the magpie_2026 group: lm-eval ships no IFBench task; its prompts and
# checkers come from allenai's `ifbench` package, which is not installed here.

def test_2026_group_is_the_papers_tasks_plus_ifbench():
    from lm_eval.tasks._yaml_loader import load_yaml

    tm = harness._task_manager(())
    assert harness.leaf_tasks(["magpie_2026"], tm) == harness.leaf_tasks(["magpie_paper"], tm) | {"ifbench"}
    assert harness.leaf_tasks(["magpie_tiny"], tm) == {"magpie_tiny_mc", "magpie_tiny_arith"}
    cfg = load_yaml(TASKS / "ifbench.yaml", resolve_func=False)
    assert (cfg["num_fewshot"], cfg["generation_kwargs"]["do_sample"], cfg["test_split"]) == (0, False, "train")
    assert [m["metric"] for m in cfg["metric_list"]] == ["prompt_level_strict_acc", "inst_level_strict_acc",
                                                        "prompt_level_loose_acc", "inst_level_loose_acc"]


def test_missing_checkers_fail_in_one_line_before_the_model(tmp_path, no_model, monkeypatch):
    monkeypatch.setattr(harness, "_installed", lambda requirement: False)  # as where neither is installed
    with pytest.raises(ImportError) as e:
        run_harness(MODEL, tmp_path / "job", ["magpie_2026"], **KW)
    msg = str(e.value)
    assert "\n" not in msg and "lm-eval task ifbench (in magpie_2026) needs ifbench>=0.2.0" in msg
    assert "git+https://github.com/allenai/IFBench@" in msg and "lm-eval task ifeval" in msg and ".[gpu]" in msg
    assert not (tmp_path / "job").exists()
    monkeypatch.setattr(harness, "_installed", lambda requirement: True)
    harness._check_tasks(["magpie_2026", "ifbench"], harness._task_manager(()))  # nothing missing: no error
    monkeypatch.setattr(harness, "_installed", lambda requirement: False)
    harness._check_tasks(["magpie_tiny"], harness._task_manager(()))  # needs nothing


def test_ifbench_scores_strict_and_loose_as_its_evaluation_lib():
    from eval.tasks.ifbench_hooks import agg_inst_level_acc, followed, process_results

    class StartsWith:  # a checker shaped like IFBench's: built from kwargs, then checks a response
        def __init__(self, iid):
            self.word, self.prompt = None, None

        def build_description(self, word=None, prompt=None):
            self.word = word or self.word
            self.prompt = prompt or self.prompt

        def get_instruction_args(self):
            return {"word": self.word, "prompt": self.prompt}

        def check_following(self, value):
            return value.startswith(self.word) and self.prompt is not None

    class NoStars(StartsWith):
        def check_following(self, value):
            return "*" not in value

    registry = {"start:word": StartsWith, "format:no_stars": NoStars}
    doc = {"prompt": "p", "instruction_id_list": ["start:word", "format:no_stars"],
           "kwargs": [{"word": "Hello", "N": None}, {"word": None}]}
    assert followed(doc, "Hello **there**", registry) == ([True, False], [True, True])  # loose: "*" removed
    assert followed(doc, "Sure!\nHello there", registry) == ([False, True], [True, True])  # loose: first line off
    assert followed(doc, "  \n", registry) == ([False, False], [False, False])  # nothing follows an empty reply
    with pytest.raises(ImportError, match="allenai's ifbench package"):
        process_results(doc, ["Hello"])  # the real registry is not installed here
    assert agg_inst_level_acc([[True, False], [True]]) == pytest.approx(2 / 3)


def test_ifbench_hooks_refuse_another_ifbench_module(monkeypatch):
    import types

    from eval.tasks import ifbench_hooks

    fake = types.ModuleType("ifbench")  # nvidia-ifbench's module: no data_path, older checkers
    fake.__file__ = "/somewhere/ifbench/__init__.py"
    fake.instructions_registry = types.SimpleNamespace(INSTRUCTION_DICT={})
    monkeypatch.setitem(sys.modules, "ifbench", fake)
    monkeypatch.setitem(sys.modules, "ifbench.instructions_registry", fake.instructions_registry)
    with pytest.raises(ImportError, match="not allenai's ifbench >= 0.2.0") as e:
        ifbench_hooks.prompts(version=1.0)
    assert "nvidia-ifbench" in str(e.value)
