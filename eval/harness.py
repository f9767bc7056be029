"""lm-evaluation-harness jobs: a thin wrapper around `lm_eval.simple_evaluate` (lm-eval 0.4.x).

    from eval.harness import run_harness
    run_harness("runs/magpie_air/sft/merged", "runs/magpie_air/harness", ["magpie_tiny"],
                include_path="eval/tasks")

or from the shell: `python -m eval.harness --model M --output_dir D --tasks magpie_tiny --include_path eval/tasks`.

What the wrapper adds to lm-eval:

* models are named the repo's way (`synth.models.resolve`: `embedded:<name>`, hub ids, paths);
* the chat template is applied by default (the paper evaluates chat models; few-shot examples then become
  user/assistant turns, lm-eval's `fewshot_as_multiturn`). Pass `apply_chat_template=False` for the plain
  concatenated prompts of the classic Open LLM Leaderboard;
* one output folder per job: `results.json` (aggregated metrics, our config, lm-eval's own blocks) and
  `samples_<task>.jsonl` per task, every file written atomically (temp file + rename) and `results.json`
  last, so a killed run never leaves a results file that looks complete;
* resume: a folder whose `results.json` has the same config is returned as is, without loading the model;
  a different config there is an error (one folder, one job);
* unknown task names fail up front, before a model is loaded, with close matches.

Backends: "hf" (transformers, any device) and "vllm" (GPU; `pip install -e .[gpu]`). vLLM's
`tensor_parallel_size`, `data_parallel_size`, `gpu_memory_utilization`, `max_model_len`, ... go in
`model_args`; so do extra HFLM arguments (`parallelize`, `peft`, `trust_remote_code`, ...). Nothing asks for
remote code unless `model_args` does.

The paper's downstream tasks (`paper_tasks()`, MAGPIE Table 3) load their data from the Hugging Face hub,
so they run on a machine with hub access (or a warm `HF_DATASETS_CACHE`); `run_paper_suite` runs each with
its own shot count. The repo's tiny local tasks (`eval/tasks/`, group `magpie_tiny`) need no hub and run on CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

from synth.models import resolve

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")
TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # the repo's local tasks: pass as include_path
RESULTS = "results.json"

# MAGPIE (arXiv 2406.08464) Table 3, the Open LLM Leaderboard v1 set with its shot counts, plus IFEval.
# lm-eval names; MMLU is the group of its 57 subjects. All of them download their data from the hub.
PAPER_TASKS: dict[str, int] = {
    "mmlu": 5,
    "arc_challenge": 25,
    "hellaswag": 10,
    "truthfulqa_mc2": 0,
    "winogrande": 5,
    "gsm8k": 5,
    "ifeval": 0,
}


def paper_tasks() -> list[tuple[str, int]]:
    """The paper's downstream tasks as (lm-eval task name, num_fewshot). They need hub access to run."""
    return list(PAPER_TASKS.items())


def run_harness(
    model: str,
    output_dir,
    tasks: list[str],
    backend: str = "hf",
    include_path: str | list | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,  # an int: that many documents; a float < 1: that fraction
    batch_size: int | str = 8,
    apply_chat_template: bool = True,
    fewshot_as_multiturn: bool | None = None,
    dtype: str = "bfloat16",
    device: str | None = None,
    model_args: dict | None = None,
    seed: int = 0,
    system_instruction: str | None = None,
) -> dict:
    """Evaluate `model` on lm-eval `tasks`; write `output_dir/results.json` and `samples_<task>.jsonl`.

    model: a `synth.models.resolve` reference (`embedded:<name>`, hub id, local checkpoint path).
    tasks: lm-eval task, group or tag names (or task YAML paths); `include_path` adds folders of task YAMLs
        (e.g. `TASKS_DIR` for the repo's `magpie_tiny*` tasks).
    num_fewshot: overrides the tasks' own shot counts (lm-eval never overrides a task that pins 0); None keeps them.
    limit: at most this many documents per task (a float < 1: that fraction). For smoke tests only.
    fewshot_as_multiturn: None means "as apply_chat_template" (lm-eval's CLI default).
    batch_size: an int or "auto"; with vllm prefer "auto" (vLLM schedules its own batches).
    dtype / device: passed to the backend; device defaults to cuda when available, else cpu (hf only).
    model_args: extra backend arguments, merged over ours (`pretrained`, `dtype`, and vLLM's parallelism).
    seed: python / numpy / torch / few-shot sampler seeds (and vLLM's sampling seed).
    system_instruction: an optional system message (lm-eval merges it with the task's description).

    Returns {task: {metric: value, ...}, ..., "seconds": wall time of the evaluation}. Metric names are
    lm-eval's, without the ",filter" suffix where a metric has one filter. An existing results.json with
    the same config is returned without recomputing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("no tasks given")
    if fewshot_as_multiturn is None:
        fewshot_as_multiturn = bool(apply_chat_template)
    elif fewshot_as_multiturn and not apply_chat_template:
        raise ValueError("fewshot_as_multiturn=True needs apply_chat_template=True")
    model_args = dict(model_args or {})
    includes = [str(Path(p).resolve()) for p in _as_list(include_path)]

    # The job's identity: a results.json written with other values is another job. Batch size, device, the
    # include_path folders and library versions are recorded in it but do not make a job different.
    identity = _json_safe({
        "model": model, "backend": backend, "tasks": tasks, "num_fewshot": num_fewshot, "limit": limit,
        "apply_chat_template": apply_chat_template, "fewshot_as_multiturn": fewshot_as_multiturn,
        "system_instruction": system_instruction, "dtype": dtype, "model_args": model_args, "seed": seed,
    })
    out = Path(output_dir)
    done = _load_existing(out, identity)
    if done is not None:
        summary = {**done["summary"], "seconds": done["seconds"]}
        print(f"harness: {out / RESULTS} already has this job; not recomputing", file=sys.stderr)
        print(_summary_line(summary, out), file=sys.stderr)
        return summary

    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ImportError("backend 'vllm' needs the vllm package, which is not installed: "
                          "install the gpu extra with `pip install -e .[gpu]` (or use backend='hf')")

    from lm_eval import simple_evaluate

    task_manager = _task_manager(tuple(includes))
    _check_tasks(tasks, task_manager, includes)

    pretrained = resolve(model)
    lm_args = {"pretrained": pretrained, "dtype": dtype}
    if backend == "hf":
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        from synth.engines import dtype_name

        # lm-eval's "auto" would take the checkpoint's bf16 even on a CPU that only emulates it.
        lm_args["dtype"] = dtype_name(dtype, device)
    else:
        lm_args.update(tensor_parallel_size=1, data_parallel_size=1, gpu_memory_utilization=0.9, seed=seed)
        if device is not None:
            log.warning("vllm picks its GPUs itself (CUDA_VISIBLE_DEVICES); ignoring device=%r", device)
            device = None
    lm_args.update(model_args)

    print(f"harness: {model} ({backend}) on {', '.join(tasks)} -> {out}", file=sys.stderr)
    start = time.time()
    with _quiet("lm_eval"):
        results = simple_evaluate(
            model=backend,
            model_args=lm_args,
            tasks=tasks,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            device=device,
            limit=limit,
            log_samples=True,
            system_instruction=system_instruction,
            apply_chat_template=apply_chat_template,
            fewshot_as_multiturn=fewshot_as_multiturn,
            task_manager=task_manager,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    seconds = round(time.time() - start, 2)
    if results is None:  # a non-zero rank of a distributed run: rank 0 writes the files
        return {}

    samples = results.pop("samples")
    summary = summarize(results)
    config = {
        **identity,
        "resolved_model": pretrained,
        "include_path": includes,
        "batch_size": batch_size,
        "device": device,
        "versions": _versions(backend),
    }
    lm_eval_config = results.pop("config", {})
    payload = _json_safe({"config": config, "summary": summary, "seconds": seconds, **results,
                          "lm_eval_config": lm_eval_config})

    out.mkdir(parents=True, exist_ok=True)
    for task in results["configs"]:
        lines = "".join(json.dumps(_sample_record(s), default=_default, ensure_ascii=False) + "\n"
                        for s in samples.get(task, []))
        _atomic_write(out / f"samples_{_safe_name(task)}.jsonl", lines)
    _atomic_write(out / RESULTS, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")  # last: marks done

    summary["seconds"] = seconds
    print(_summary_line(summary, out), file=sys.stderr)
    return summary


def run_paper_suite(model: str, output_dir, tasks: list[str] | None = None, **kwargs) -> dict:
    """The paper's tasks, each with its own shot count, each in `output_dir/<task>/` (resumable one by one).

    Needs the hub (or cached datasets). kwargs go to `run_harness` (backend, batch_size, model_args, ...).
    """
    chosen = tasks or list(PAPER_TASKS)
    unknown = [t for t in chosen if t not in PAPER_TASKS]
    if unknown:
        raise ValueError(f"not paper tasks: {unknown}; paper tasks: {list(PAPER_TASKS)}")
    return {task: run_harness(model, Path(output_dir) / task, [task], num_fewshot=PAPER_TASKS[task], **kwargs)
            for task in chosen}


def summarize(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm-eval's results block (group rows too, when they aggregate)."""
    summary = {}
    for task, row in results.get("results", {}).items():
        metrics = {}
        for key, value in row.items():
            metric, sep, filt = key.partition(",")
            if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            metrics[(metric, filt)] = float(value)
        per_metric = {}
        for metric, _ in metrics:
            per_metric[metric] = per_metric.get(metric, 0) + 1
        compact = {(m if per_metric[m] == 1 else f"{m},{f}"): v for (m, f), v in metrics.items()}
        if compact:
            summary[task] = compact
    return summary


def _summary_line(summary: dict, out: Path) -> str:
    parts = [f"{task}: " + " ".join(f"{m}={v:.4f}" for m, v in metrics.items())
             for task, metrics in summary.items() if isinstance(metrics, dict)]
    return f"harness: {' | '.join(parts)} | {summary.get('seconds', 0):.1f} s -> {out / RESULTS}"


@functools.lru_cache(maxsize=4)
def _task_manager(includes: tuple[str, ...]):
    # Indexing lm-eval's task YAMLs takes about 10 s here; the paper suite runs 7 jobs in a row, and
    # lm-eval's own CLI also builds one TaskManager for all the tasks it evaluates.
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(includes) or None)


def _check_tasks(tasks: list[str], task_manager, includes: list[str]) -> None:
    known = set(task_manager.all_tasks)
    for name in tasks:
        if name in known or Path(name).is_file():
            continue
        close = difflib.get_close_matches(name, task_manager.all_tasks, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        where = f" (searched lm-eval's tasks and {', '.join(includes)})" if includes else ""
        raise ValueError(f"unknown lm-eval task {name!r}{where}; {hint}tasks outside lm-eval need "
                         f"include_path / --include_path with their YAML folder (the repo's: {TASKS_DIR})")


def _load_existing(out: Path, identity: dict) -> dict | None:
    path = out / RESULTS
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
        stored = done["config"]
        missing = {"summary", "seconds"} - done.keys()
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} exists but is not a results file of this harness ({e!r}); "
                         "use another output_dir or remove it") from e
    diff = [f"{k}: {stored.get(k)!r} there, {v!r} now" for k, v in identity.items() if stored.get(k) != v]
    if diff:
        raise ValueError(f"{out} holds results of a different harness job ({'; '.join(diff)}); "
                         "use another output_dir")
    return done


def _sample_record(sample: dict) -> dict:
    """One samples_*.jsonl line, shaped as lm-eval's EvaluationTracker writes it (datasets-loadable)."""
    from lm_eval.utils import sanitize_list

    record = dict(sample)
    record["arguments"] = {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(args)}
                           for i, args in enumerate(sample["arguments"])}
    record["resps"] = sanitize_list(sample["resps"])
    record["filtered_resps"] = sanitize_list(sample["filtered_resps"])
    record["target"] = str(sample["target"])
    return record


def _default(o):
    from lm_eval.utils import handle_non_serializable

    return handle_non_serializable(o)


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=_default, ensure_ascii=False))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _safe_name(task: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task)


def _as_list(x) -> list:
    if x is None:
        return []
    return [x] if isinstance(x, (str, os.PathLike)) else list(x)


def _versions(backend: str) -> dict:
    versions = {"python": sys.version.split()[0]}
    for pkg in ("lm_eval", "transformers", "torch", "datasets", *(("vllm",) if backend == "vllm" else ())):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


class _DropCustomDatasetHint(logging.Filter):
    """lm-eval warns, for every task with a `custom_dataset` hook (ours: see eval/tasks/utils.py), that
    `--metadata` can pass kwargs to it: noise for our tasks, which take none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


@contextlib.contextmanager
def _quiet(logger_name: str):
    """lm-eval logs every step at INFO; keep its warnings, drop the rest (its progress bars stay)."""
    logger = logging.getLogger(logger_name)
    task_logger = logging.getLogger(f"{logger_name}.api.task")
    hint = _DropCustomDatasetHint()
    level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    task_logger.addFilter(hint)
    try:
        yield
    finally:
        logger.setLevel(level)
        task_logger.removeFilter(hint)


def parse_model_args(text: str | None) -> dict:
    """--model_args as JSON (`{"tensor_parallel_size": 2}`) or lm-eval's `k=v,k=v`."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        return json.loads(text)
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.harness", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="embedded:<name>, hub id or checkpoint path")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--tasks", nargs="+", help="lm-eval task/group names (comma or space separated)")
    p.add_argument("--paper", action="store_true", help="the paper's tasks with their shot counts (needs the hub)")
    p.add_argument("--backend", choices=BACKENDS, default="hf")
    p.add_argument("--include_path", nargs="*", default=None, help=f"folders of task YAMLs, e.g. {TASKS_DIR}")
    p.add_argument("--num_fewshot", type=int, default=None)
    p.add_argument("--limit", type=float, default=None)
    p.add_argument("--batch_size", default=None, help="default: 8 for hf, auto for vllm (it batches itself)")
    p.add_argument("--no_chat_template", action="store_true", help="plain prompts instead of the chat template")
    p.add_argument("--fewshot_as_multiturn", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--model_args", default=None, help='JSON or k=v,k=v, e.g. "tensor_parallel_size=2"')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system_instruction", default=None)
    a = p.parse_args(argv)
    if bool(a.tasks) == a.paper:
        p.error("give --tasks or --paper")
    limit = None if a.limit is None else (int(a.limit) if a.limit >= 1 else a.limit)
    batch_size = a.batch_size or ("auto" if a.backend == "vllm" else "8")
    batch_size = int(batch_size) if batch_size.isdigit() else batch_size
    kwargs = {"backend": a.backend, "include_path": a.include_path, "limit": limit, "batch_size": batch_size,
              "apply_chat_template": not a.no_chat_template, "fewshot_as_multiturn": a.fewshot_as_multiturn,
              "dtype": a.dtype, "device": a.device, "model_args": parse_model_args(a.model_args), "seed": a.seed,
              "system_instruction": a.system_instruction}
    try:
        if a.paper:
            run_paper_suite(a.model, a.output_dir, **kwargs)
        else:
            tasks = [t for arg in a.tasks for t in arg.split(",") if t]
            run_harness(a.model, a.output_dir, tasks, num_fewshot=a.num_fewshot, **kwargs)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
