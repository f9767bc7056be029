"""lm-eval harness jobs on the model under test (paper Table 3's downstream tasks, IFEval, and with `magpie_2026`
IFBench; `lm_eval_*` keys): eval/harness.py runs them, this object says where and reports their numbers. IFEval and
IFBench are not in the paper: the table prints them in its "Beyond the paper" section, beside published numbers.

    <output_dir>/lm_eval/results_<date>.json    lm-eval's results and samples (its tracker's files)
"""
from __future__ import annotations

from pathlib import Path

from core import procs

from ..harness import parse_model_args, run_harness
from .base import Benchmark, register_benchmark

IF_METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


def _metric(task: dict, name: str):
    # harness.summarize drops ",none" where a metric has one filter
    v = task.get(name, task.get(f"{name},none"))
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@register_benchmark("lm_eval")
class LmEval(Benchmark):
    beyond = (("ifeval_avg4", "IFEval (mean of 4 accuracies, %)"),
              ("ifbench_prompt_loose", "IFBench (prompt loose, %)"))

    def run(self, margs, eargs, hargs):
        backend = hargs.lm_eval_backend or ("vllm" if margs.engine == "vllm" else "hf")
        # lm-eval builds its own model (vLLM: one LLM for the whole group): a process of its own where it needs one.
        return procs.place(run_harness, margs.model, Path(eargs.output_dir) / self.name, hargs.lm_eval_tasks,
                           engines=(backend,), backend=backend, include_path=hargs.lm_eval_include_path,
                           num_fewshot=hargs.lm_eval_num_fewshot, limit=hargs.lm_eval_limit,
                           batch_size=hargs.lm_eval_batch_size, apply_chat_template=hargs.lm_eval_apply_chat_template,
                           dtype=margs.dtype, device=None if margs.device == "auto" else margs.device, seed=eargs.seed,
                           model_args={**_vllm_role_args(margs, backend), **parse_model_args(hargs.lm_eval_model_args)})

    def log_values(self, res):
        return {f"{self.name}/{t}/{m}": v for t, ms in res.items() if isinstance(ms, dict)
                for m, v in ms.items() if isinstance(v, (int, float))}

    def summary(self, res):
        n_tasks = len([t for t, m in res.items() if isinstance(m, dict)])
        return f"lm-eval {n_tasks} tasks ({res.get('seconds', 0):.0f}s)"

    def measured(self, res):
        return {"lm_eval": {t: m for t, m in res.items() if isinstance(m, dict)}}

    def beyond_values(self, res):
        out = {}
        ifeval = [_metric(res.get("ifeval") or {}, m) for m in IF_METRICS]
        if None not in ifeval:  # Meta's IFEval number: the mean of the four accuracies
            out["ifeval_avg4"] = 100 * sum(ifeval) / 4
        loose = _metric(res.get("ifbench") or {}, "prompt_level_loose_acc")
        if loose is not None:  # the IFBench paper's number
            out["ifbench_prompt_loose"] = 100 * loose
        return out


def _vllm_role_args(margs, backend: str) -> dict:
    """The model role's vLLM settings as lm-eval model_args (its vllm backend builds its own LLM)."""
    if backend != "vllm":
        return {}
    role = margs.role()
    return {"tensor_parallel_size": role.tensor_parallel_size, "gpu_memory_utilization": role.gpu_memory_utilization,
            **({"max_model_len": role.max_model_len} if role.max_model_len else {})}
