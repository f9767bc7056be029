"""`python -m synth <verb> --config recipes/configs/synth/<profile>.yaml [--key value ...]`

Verbs (each reads and writes dataset directories under --output_dir):
  instructions   step 1: sample instructions from the pre-query template  -> instructions/
  responses      step 2: answer them with the chat template               -> responses/
  multiturn      extend conversations with follow-up turns                -> multiturn/
  tag            task category, difficulty, quality, reward, safety,
                 language, nearest-neighbour distance                     -> tagged/
  filter         a paper Table 5 preset or an expression                  -> filtered/
  export         TRL messages Parquet, ShareGPT JSONL, dataset card       -> export/
  run            the config's `stages`, in order (what recipes/*.sh call)
  template       print the derived pre-query template, stops and multi-turn append template
  keys           every config key with its default's source

A run killed at any point resumes when started again with the same config.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

GENERATION = ("instructions", "responses", "multiturn")
STAGES = GENERATION + ("tag", "filter", "export")
VERBS = STAGES + ("run", "template", "keys")
UPSTREAM = {"responses": ("instructions",), "multiturn": ("responses",), "tag": ("multiturn", "responses"),
            "filter": ("tag",), "export": ("filter", "tag")}
DIRS = {"instructions": "instructions", "responses": "responses", "multiturn": "multiturn", "tag": "tagged",
        "filter": "filtered", "export": "export"}


def _die(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def _summary(stage: str, n: int, unit: str, seconds: float, out: Path, counts: dict) -> str:
    rate = n / seconds * 60 if seconds > 0 else float("nan")
    extra = ""
    if isinstance(counts.get("dropped"), dict):
        extra = " (dropped: " + ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) + ")"
    if "truncated" in counts:
        extra = f" ({counts['truncated']} hit max_tokens)"
    if counts.get("tokens_this_run"):
        extra += f", {counts['tokens_this_run'] / seconds:.0f} generated tok/s"
    elif "tokens_this_run" in counts:
        extra += ", already complete: nothing generated"
    return f"[{stage}] {n} {unit}{extra} in {seconds:.1f}s: {rate:.1f} {unit}/min -> {out}"


def tagger_kwargs(t) -> dict[str, dict]:
    """Constructor arguments of each configured tagger, from TagArgs."""
    judge = dict(judge_model=t.judge_model, judge_engine=t.judge_engine, max_tokens=t.judge_max_tokens,
                 prefill=t.judge_prefill)
    known = {
        "task_category": judge, "difficulty": judge, "input_quality": judge,
        "instruct_reward": dict(reward_model=t.reward_model),
        "reward_difference": dict(reward_model=t.reward_model, base_model=t.reward_base_model,
                                  base_engine=t.judge_engine, base_max_tokens=t.base_max_tokens),
        "llama_guard_2": dict(guard_model=t.guard_model, guard_engine=t.judge_engine),
        "language": {},
        "min_neighbor_distance": dict(embedding_model=t.embedding_model, k=t.knn_k, repeat_threshold=t.repeat_threshold),
    }
    from .taggers import tagger_names

    out = {}
    for name in t.taggers:
        if name not in known:
            raise ValueError(f"unknown tagger {name!r} in taggers; choose from {tagger_names()}")
        if name == "reward_difference" and not t.reward_base_model:
            raise ValueError("tagger reward_difference needs reward_base_model (paper: meta-llama/Meta-Llama-3-8B)")
        out[name] = known[name]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in VERBS:
        _die(f"unknown verb {argv[0]!r}; choose {', '.join(VERBS)}")
    verb, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from . import config as cfg

    if verb == "keys":
        print(cfg.field_help())
        return 0
    try:
        margs, iargs, rargs, mtargs, targs, fargs, eargs, run = cfg.parse(rest)
    except (ValueError, TypeError) as e:  # bad YAML, unknown key, bad value
        _die(f"config: {str(e).splitlines()[0]}")
    except FileNotFoundError as e:
        _die(f"config file not found: {e.filename}")

    from . import store

    try:
        return _run(verb, margs, iargs, rargs, mtargs, targs, fargs, eargs, run)
    except (store.RunMismatch, store.IncompleteInput, FileNotFoundError, ImportError, ValueError) as e:
        _die(str(e).splitlines()[0] if str(e) else e.__class__.__name__)


def _run(verb, margs, iargs, rargs, mtargs, targs, fargs, eargs, run) -> int:
    from . import config as cfg, store, tracking

    root = Path(run.output_dir)
    stages = [verb] if verb in STAGES else list(run.stages) if verb == "run" else []
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r} in stages; choose from {', '.join(STAGES)}")
    if "tag" in stages:
        tkw = tagger_kwargs(targs)  # validate before any model is loaded
    def source(stage):
        """A stage reads the nearest upstream stage that this run makes or that is on disk."""
        for s in UPSTREAM[stage]:
            if s in stages or (root / DIRS[s] / "manifest.json").exists():
                return root / DIRS[s]
        return root / DIRS[UPSTREAM[stage][-1]]

    if stages and stages[0] != "instructions":  # fail on a missing input before loading a model
        store.DatasetDir(source(stages[0])).require_complete()
    engine = None

    def get_engine():
        nonlocal engine
        if engine is None:
            from .engines import get_engine as build

            engine = build(margs.engine, **margs.engine_kwargs())
        return engine

    if verb == "template":
        from . import instructions as ins

        tpl, stops = ins.resolve_template(get_engine(), margs, iargs)
        print(json.dumps({**tpl.to_dict(), "instruction_stops": stops}, indent=2))
        return 0
    group = run.wandb_group or root.name
    log_cfg = {"profile": run.profile, **cfg.stage_config(margs, iargs, rargs, mtargs, targs, fargs, eargs)}
    for stage in stages:
        out = root / DIRS[stage]
        with tracking.stage_run(stage, log_cfg, root, run.report_to, run.wandb_project, group) as log:
            t0 = time.perf_counter()
            if stage == "instructions":
                from .instructions import generate_instructions

                c = generate_instructions(get_engine(), margs, iargs, run, out)
                n, unit = c["kept"], "instructions"
            elif stage == "responses":
                from .responses import generate_responses

                c = generate_responses(get_engine(), margs, rargs, source(stage), out)
                n, unit = c["pairs"], "pairs"
            elif stage == "multiturn":
                from .multiturn import generate_multiturn

                c = generate_multiturn(get_engine(), margs, mtargs, rargs, source(stage), out, seed=iargs.seed)
                n, unit = c["conversations"], "conversations"
            elif stage == "tag":
                from .tag import tag_dataset

                if engine is not None:  # free the generator before loading the taggers' models
                    engine.close()
                    engine = None
                c = tag_dataset(source(stage), out, tkw, batch_size=targs.tag_batch_size)
                n, unit = c["records"], "records"
            elif stage == "filter":
                from .filters import filter_dataset

                c = filter_dataset(source(stage), out, fargs.filter_preset, size=fargs.filter_size,
                                   expression=fargs.filter_expression, seed=fargs.filter_seed)
                n, unit = c["kept"], "records"
            elif stage == "export":
                from .export import export

                name = eargs.export_name or f"{root.name}-{fargs.filter_preset or 'custom'}"
                c = export(source(stage), out, name, card_info={"profile": run.profile, "recipe": root.name},
                           push_to_hub=eargs.push_to_hub)
                n, unit = c.get("records", c.get("rows", 0)), "records"
            dt = time.perf_counter() - t0
            log({f"{stage}/{k}": v for k, v in c.items() if isinstance(v, (int, float))} | {f"{stage}/per_min": n / dt * 60})
            if stage in ("tag", "filter"):
                _log_tables(log, out)
        if stage == "filter" and c.get("funnel"):
            from .filters import format_funnel

            print(format_funnel(c["funnel"]))
        print(_summary(stage, n, unit, dt, out, c))
    return 0


def _log_tables(log, out: Path) -> None:
    """Tag histograms and the filter funnel as W&B tables and images."""
    try:
        from . import stats, store

        ds = store.DatasetDir(out)
        m = ds.manifest() or {}
        log(stats.wandb_tables(ds.records(), m.get("funnel")))
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
