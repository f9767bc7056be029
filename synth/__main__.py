"""`python -m synth <verb> --config recipes/configs/synth/<profile>.yaml [--key value ...]`

Verbs (each reads and writes dataset directories under --output_dir):
  instructions   step 1: sample instructions from the pre-query template  -> instructions/
  responses      step 2: answer them with the chat template               -> responses/
  multiturn      extend conversations with follow-up turns                -> multiturn/
  tag            task category, difficulty, quality, reward, safety,
                 language, nearest-neighbour distance                     -> tagged/
  filter         a paper Table 5 preset or an SQL condition               -> filtered/
  export         TRL messages Parquet, ShareGPT JSONL, dataset card       -> export/
  preferences    DPO pairs: pick instructions from tagged/, sample k=5 answers each, score them with a
                 reward model, chosen = best, rejected = worst (stages preferences, preference_pairs)
                                                                          -> preferences/{prompts,samples,scored,export}/
  run            the config's `stages`, in order (what recipes/*.sh call)
  template       print the derived pre-query template, stops and multi-turn append template
  taggers        list the taggers: fields, models (from --config if given), model batch cap
  presets        list the filter presets: conditions, cut, size, source
  report RUN     one static HTML page of a run folder: data, samples, evaluation  -> RUN/report/index.html
  <verb> --help  every config key with its default's source

Every value is checked before a model loads or a file is written. A run killed at any point resumes
when started again with the same config.
"""
from __future__ import annotations

import inspect
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def _die(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def check_context(limits: dict, context: int | None, model: str) -> None:
    """Refuse a token limit longer than the model's context (prompt and answer share it): vLLM and transformers
    would accept --max_tokens 10000000000 and the stage would run on a limit it can never reach."""
    for key, value in limits.items():
        if context and value is not None and value > context:
            raise ValueError(f"{key} {value} is more than the context of {model}, {context} tokens (max_model_len); "
                             f"lower {key}")


class LazyEngine:
    """A model role's engine, built on first use: a stage whose output is already complete never loads it.
    `limits` ({key: tokens}) are checked against the model's context as it loads, before anything is generated."""

    def __init__(self, role):
        self.role, self.loaded, self.limits = role, None, {}

    def within_context(self, limits: dict) -> LazyEngine:
        self.limits = limits
        if self.loaded is not None:
            check_context(limits, getattr(self.loaded, "max_model_len", None), self.role.model)
        return self

    def __getattr__(self, name):
        if self.loaded is None:
            self.loaded = self.role.build()
            check_context(self.limits, getattr(self.loaded, "max_model_len", None), self.role.model)
        return getattr(self.loaded, name)

    def close(self):  # free the model before another one loads (one model at a time)
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None


class Context:
    """What a stage function needs: the parsed config, and the engine of the model role it uses (lazy)."""

    def __init__(self, margs, iargs, rargs, mtargs, targs, fargs, eargs, pargs, run):
        self.parsed = (margs, iargs, rargs, mtargs, targs, fargs, eargs, pargs, run)
        self.margs, self.iargs, self.rargs, self.mtargs = margs, iargs, rargs, mtargs
        self.targs, self.fargs, self.eargs, self.pargs, self.run = targs, fargs, eargs, pargs, run
        self._engines: dict = {}
        from .cluster import Cluster

        self.cluster = Cluster.from_args(run)  # None: every stage in this machine's processes

    def engine(self, role, limits: dict | None = None) -> LazyEngine:
        """The engine of `role`; any other model this context holds is freed first."""
        for other in [r for r in self._engines if r != role]:
            self._engines.pop(other).close()
        return self._engines.setdefault(role, LazyEngine(role)).within_context(limits or {})

    def limits(self, keys: tuple[str, ...]) -> dict:
        """The values of token-limit keys ("max_tokens", "response_max_tokens", ...) in this config."""
        return {k: next(getattr(p, k) for p in self.parsed if hasattr(p, k)) for k in keys}

    def close(self) -> None:
        for role in list(self._engines):
            self._engines.pop(role).close()


def _export_args(c: Context, engine, src, out):
    root = Path(c.run.output_dir)
    name = c.eargs.export_name or f"{root.name}-{c.fargs.filter_preset or 'custom'}"
    return (src, out, name), dict(card_info={"profile": c.run.profile, "recipe": root.name},
                                  push_to_hub=c.eargs.push_to_hub)


def _generator(c: Context):
    return c.margs.role()


def _responder(c: Context):
    return c.rargs.response_role(c.margs.role())


@dataclass(frozen=True)
class Stage:
    name: str
    fn: str                  # "module:function" in synth/, imported when the stage runs
    args: Callable[[Context, object, Path | None, Path], tuple[tuple, dict]]  # (c, engine, src, out)
    out: str                 # folder under output_dir
    inputs: tuple[str, ...]  # upstream stages, nearest first: the first one this run makes or finds is read
    count: str               # the counts key that the summary line reports
    unit: str
    model: Callable[[Context], object] | None = None  # the ModelRole whose engine the stage uses, if any
    config: Callable[[Context, Path | None], dict] | None = None  # what a finished output is keyed by (model stages)
    limits: tuple[str, ...] = ()  # its keys of generated tokens, which the model's context must hold

    def __call__(self, c: Context, src, out) -> dict:
        """Run the stage: in a process of its own when its model needs one (synth/procs.py), else here. A finished
        output of this config is read back here: no process, no model."""
        from . import procs, store

        if self.model is None:
            c.close()  # one model at a time: the taggers load their own
        elif c.cluster is not None:
            c.close()  # the actors load the model; this process reads its tokenizer (cluster.DriverView)
        elif procs.isolate(self.model(c).engine) and store.DatasetDir(out).reusable(self.config(c, src)) is None:
            c.close()
            return procs.in_own_process("synth.__main__:run_stage", self.name, c.parsed, src, out)
        return self.run_here(c, src, out)

    def run_here(self, c: Context, src, out) -> dict:
        import importlib

        engine = None
        if self.model is not None:
            from .cluster import DriverView

            engine = DriverView(self.model(c)) if c.cluster is not None else \
                c.engine(self.model(c), c.limits(self.limits))
        module, fn = self.fn.split(":")
        args, kwargs = self.args(c, engine, src, out)
        if c.cluster is not None and (self.model is not None or self.name in ("tag", "preference_pairs")):
            kwargs["cluster"] = c.cluster
        return getattr(importlib.import_module(f".{module}", __package__), fn)(*args, **kwargs)


def run_stage(name: str, parsed: tuple, src, out) -> dict:
    """A stage in this process, from its parsed config (what a stage's own process runs)."""
    c = Context(*parsed)
    try:
        return STAGES[name].run_here(c, src, out)
    finally:
        c.close()


def _instructions_config(c: Context, src) -> dict:
    from .instructions import instructions_config

    return instructions_config(c.margs, c.iargs)


def _responses_config(c: Context, src) -> dict:
    from .responses import responses_config

    return responses_config(c.margs, c.rargs, src)


def _multiturn_config(c: Context, src) -> dict:
    from .multiturn import multiturn_config

    return multiturn_config(c.margs, c.mtargs, c.rargs, src, c.iargs.seed)


def _preferences_config(c: Context, src) -> dict:
    from .preferences import preferences_config

    return preferences_config(_responder(c), c.pargs, src)


def _preference_args(c: Context, engine, src, out):
    return (engine, _responder(c), c.pargs, src, out.parent), {}


def _pairs_args(c: Context, engine, src, out):
    root = Path(c.run.output_dir)
    name = c.pargs.pref_export_name or f"{root.name}-dpo"
    return (src, out.parent, c.pargs, name), dict(card_info={"profile": c.run.profile, "recipe": root.name})


STAGES = {s.name: s for s in (
    Stage("instructions", "instructions:generate_instructions", lambda c, e, src, out: ((e, c.margs, c.iargs,
          c.run, out), {}), "instructions", (), "kept", "instructions", model=_generator, config=_instructions_config,
          limits=("max_tokens",)),
    Stage("responses", "responses:generate_responses", lambda c, e, src, out: ((e, c.margs, c.rargs, src, out), {}),
          "responses", ("instructions",), "pairs", "pairs", model=_responder, config=_responses_config,
          limits=("response_max_tokens",)),
    Stage("multiturn", "multiturn:generate_multiturn",
          lambda c, e, src, out: ((e, c.margs, c.mtargs, c.rargs, src, out), {"seed": c.iargs.seed}),
          "multiturn", ("responses",), "conversations", "conversations", model=_generator, config=_multiturn_config,
          limits=("mt_max_tokens", "response_max_tokens")),
    Stage("tag", "tag:tag_dataset",
          lambda c, e, src, out: ((src, out, tagger_kwargs(c.targs)), {"batch_size": c.targs.tag_batch_size}),
          "tagged", ("multiturn", "responses"), "records", "records"),
    Stage("filter", "filters:filter_dataset",
          lambda c, e, src, out: ((src, out, c.fargs.filter_preset), dict(
              size=c.fargs.filter_size, expression=c.fargs.filter_expression, seed=c.fargs.filter_seed)),
          "filtered", ("tag",), "kept", "records"),
    Stage("export", "export:export", _export_args, "export", ("filter", "tag"), "records", "records"),
    Stage("preferences", "preferences:sample_preferences", _preference_args, "preferences/samples", ("tag",),
          "instructions", "prompts", model=_responder, config=_preferences_config, limits=("pref_max_tokens",)),
    Stage("preference_pairs", "preferences:pair_preferences", _pairs_args, "preferences/export", ("preferences",),
          "pairs", "pairs"),
)}
# A verb that runs several stages in order.
VERB_STAGES = {"preferences": ("preferences", "preference_pairs")}
VERBS = (*STAGES, "run", "template", "taggers", "presets", "report")


def _summary(stage: str, n: int, unit: str, seconds: float, out: Path, counts: dict) -> str:
    rate = n / seconds * 60 if seconds > 0 else float("nan")
    extra = ""
    if isinstance(counts.get("dropped"), dict):
        extra = " (dropped: " + ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) + ")"
    if "truncated" in counts:
        extra = f" ({counts['truncated']} hit max_tokens)"
    if counts.get("tokens_this_run"):
        extra += f", {counts['tokens_this_run'] / seconds:.0f} generated tok/s"
    elif "tokens_this_run" in counts or counts.get("reused"):
        extra += ", already complete: nothing computed"
    return f"[{stage}] {n} {unit}{extra} in {seconds:.1f}s: {rate:.1f} {unit}/min -> {out}"


def _tagger_table(t) -> dict[str, dict]:
    """Constructor arguments of every tagger, from TagArgs: each model role's engine settings go with it."""
    def settings(role) -> dict:
        kw = role.engine_kwargs()
        kw.pop("model")
        return kw

    judge_role, guard_role, reward_role = t.judge_role(), t.guard_role(), t.reward_role()
    reward = dict(reward_model=reward_role.model, dtype=reward_role.dtype, device=reward_role.device,
                  trust_remote_code=reward_role.trust_remote_code,
                  **({"batch_size": reward_role.hf_batch_size} if reward_role.hf_batch_size else {}))
    base = {}
    if t.base_model:
        base_role = t.base_role()
        base = dict(base_model=base_role.model, base_engine=base_role.engine, engine_kwargs=settings(base_role))
    return {
        **dict.fromkeys(("task_category", "difficulty", "input_quality"), dict(
            judge_model=judge_role.model, judge_engine=judge_role.engine, max_tokens=t.judge_max_tokens,
            prefill=t.judge_prefill, **settings(judge_role))),
        "instruct_reward": reward,
        "reward_difference": {**reward, **base, "base_max_tokens": t.base_max_tokens},
        "llama_guard_2": dict(guard_model=guard_role.model, guard_engine=guard_role.engine, **settings(guard_role)),
        "language": {},
        "min_neighbor_distance": dict(embedding_model=t.embedding_model, k=t.knn_k,
                                      repeat_threshold=t.repeat_threshold, index=t.knn_index, nprobe=t.knn_nprobe),
    }


def tagger_kwargs(t) -> dict[str, dict]:
    """Constructor arguments of each configured tagger, in order."""
    if "reward_difference" in t.taggers and not t.base_model:
        raise ValueError("tagger reward_difference needs base_model (paper: meta-llama/Meta-Llama-3-8B)")
    known = _tagger_table(t)
    for name in t.taggers:
        if name not in known:
            raise ValueError(f"unknown tagger {name!r} in taggers; choose from {', '.join(known)} "
                             "(python -m synth taggers)")
    return {name: known[name] for name in t.taggers}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in VERBS:
        _die(f"unknown verb {argv[0]!r}; choose {', '.join(VERBS)}")
    verb, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from . import config as cfg, store
    from .cluster import ClusterError

    if verb == "presets":
        return _list_presets()
    if verb == "report":  # a run folder, not a config: its own arguments (synth/report.py)
        from .report import main as report_main

        return report_main(rest)
    try:
        parsed = cfg.parse(rest)
    except ValueError as e:  # bad YAML, unknown key, bad value: one line that says where, no usage dump
        _die(str(e))
    c = Context(*parsed)
    try:
        if verb == "taggers":
            return _list_taggers(c.targs)
        return _run(verb, c)
    except OSError as e:  # a read-only or full filesystem, an output_dir that is a file
        _die(store.write_error(e, c.run.output_dir))
    except (store.RunMismatch, store.IncompleteInput, ImportError, ValueError, ClusterError) as e:
        _die(str(e).splitlines()[0] if str(e) else e.__class__.__name__)


def _plan(verb: str, c: Context) -> list[str]:
    """The stages to run, every value they use checked: nothing has loaded or been written yet."""
    stages = list(VERB_STAGES.get(verb, [verb])) if verb in STAGES else list(c.run.stages) if verb == "run" else []
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r} in stages; choose from {', '.join(STAGES)}")
    for s in stages:  # a max_model_len given in the config is known before any model loads
        if STAGES[s].model is not None:
            role = STAGES[s].model(c)
            check_context(c.limits(STAGES[s].limits), role.max_model_len, role.model)
    if "tag" in stages:
        tagger_kwargs(c.targs)
    if "multiturn" in stages and _responder(c) != _generator(c):
        raise ValueError("multiturn answers every turn with the generator; a response_model of its own applies to "
                         "the responses stage only: run multiturn without the response_* keys")
    if "filter" in stages:
        from .filters import validate

        validate(c.fargs.filter_preset, c.fargs.filter_expression, c.fargs.filter_size)
    if "preferences" in stages:
        from .filters import validate

        validate(c.pargs.pref_preset, None, c.pargs.pref_size)
    if "preference_pairs" in stages:
        from .taggers.reward import check_reward_model

        role = c.pargs.pref_reward_role()
        check_reward_model(role.model, role.trust_remote_code, key="pref_reward_model")
    from .store import check_output_dir

    check_output_dir(c.run.output_dir)
    if c.cluster is not None:  # reachable, big enough for each model, and seeing output_dir: before any writing
        c.cluster.connect()
        for s in stages:
            if STAGES[s].model is not None:
                role = STAGES[s].model(c)
                c.cluster.layout(role.model, role.tensor_parallel_size, role.engine != "openai")
        c.cluster.check_storage(Path(c.run.output_dir).absolute())
    return stages


def _run(verb: str, c: Context) -> int:
    from . import config as cfg, store, tracking

    stages = _plan(verb, c)
    # Actors on other machines resolve paths in their own working directory: give them absolute ones.
    root = Path(c.run.output_dir).absolute() if c.cluster is not None else Path(c.run.output_dir)

    def source(stage: Stage) -> Path | None:
        """A stage reads the nearest upstream stage that this run makes or that is on disk."""
        for s in stage.inputs:
            if s in stages or (root / STAGES[s].out / store.MANIFEST).exists():
                return root / STAGES[s].out
        return root / STAGES[stage.inputs[-1]].out if stage.inputs else None

    first = STAGES[stages[0]] if stages else None
    if first is not None and first.inputs:  # fail on a missing input before loading a model
        store.DatasetDir(source(first)).require_complete()
    if verb == "template":
        from . import instructions as ins

        tpl, stops = ins.resolve_template(c.engine(c.margs.role()), c.margs, c.iargs)
        print(json.dumps({**tpl.to_dict(), "instruction_stops": stops}, indent=2))
        return 0
    group = c.run.wandb_group or root.name
    log_cfg = {"profile": c.run.profile,
               **cfg.stage_config(c.margs, c.iargs, c.rargs, c.mtargs, c.targs, c.fargs, c.eargs, c.pargs)}
    for name in stages:
        stage, out = STAGES[name], root / STAGES[name].out
        with tracking.stage_run(name, log_cfg, root, c.run.report_to, c.run.wandb_project, group) as log:
            t0 = time.perf_counter()
            counts = stage(c, source(stage), out)
            dt = time.perf_counter() - t0
            n = counts.get(stage.count, 0)
            log({f"{name}/{k}": v for k, v in counts.items() if isinstance(v, (int, float))}
                | {f"{name}/per_min": n / dt * 60})
            if name in ("tag", "filter"):
                _log_tables(log, out)
            if name == "preference_pairs":
                from .preferences import wandb_logs

                log(wandb_logs(out))
        if counts.get("funnel"):
            from .filters import format_funnel

            print(format_funnel(counts["funnel"]))
        print(_summary(name, n, stage.unit, dt, out, counts))
        if counts.get("emptied_by"):
            print(f"WARNING: the filter kept 0 of {counts['input']:,} rows: {counts['emptied_by']!r} removed the "
                  "last ones; loosen it (python -m synth presets) or check the tags", file=sys.stderr)
    return 0


def _log_tables(log, out: Path) -> None:
    """Tag histograms and the filter funnel as W&B tables and images (the funnel also as funnel.png)."""
    from . import stats, store

    ds = store.DatasetDir(out)
    funnel = (ds.manifest() or {}).get("funnel")
    if funnel:
        stats.plot_funnel(funnel, out / "funnel.png")
    log(stats.wandb_tables(ds, funnel))  # streamed: the tags and lengths it bins, a batch at a time


def _list_taggers(targs) -> int:
    from .taggers import get_tagger_class

    for name, kwargs in _tagger_table(targs).items():
        cls = get_tagger_class(name)
        param = inspect.signature(cls).parameters.get("batch_size")
        batch = param.default if param is not None else cls.batch_size
        cap = "all records at once" if cls.batch_size is None else f"model batch <= {batch}"
        models = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k.endswith(("model", "engine"))) or "no model"
        print(f"{'on' if name in targs.taggers else '  '} {name:<22} fields: {', '.join(cls.fields)}")
        print(f"   {'':<22} {cap}; {models}")
    print("(on: in this config's taggers)")
    return 0


def _list_presets() -> int:
    from .filters import PRESETS

    for p in PRESETS.values():
        size = "all rows" if p.cut is None else f"{p.cut} {p.size:,}"
        print(f"{p.name:<24} {size:<18} {p.source}")
        for cond in p.conditions:
            print(f"{'':<27}{cond}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
