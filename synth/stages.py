"""The stage table and its runner: every MAGPIE stage declared once, run by one loop.

A stage declares its name, output folder, inputs, model role, what it checks before anything loads, its resume key
(model stages), its shard function's entry point, the counts key and unit of its summary line, and an optional
after-step (W&B tables, plots). `run(stages, c)` validates every stage first, cuts the run where the model changes
(`segments`: consecutive stages on one model share one process and one engine, built once), places each segment
(here, a process of its own, or the Ray cluster: `place_segment`, the one placement decision) and runs its stages:
the stage function (reuse -> begin -> shards -> finish, core.shards.write_stage) -> summary line -> W&B.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core import procs, store, tracking
from core.answer import generate_responses, responses_config
from core.cluster import Cluster, DriverView
from core.config import stage_config
from core.engines import LazyEngine, check_context, registry
from core.layout import RunLayout

from . import stats
from .export import export
from .filters import filter_dataset, format_funnel, validate
from .instructions import generate_instructions, instructions_config
from .multiturn import generate_multiturn, multiturn_config
from .preferences import (
    export_preferences,
    preferences_config,
    sample_preferences,
    score_preferences,
    select_prompts,
    wandb_logs,
)
from .tag import generating_roles, shares_engine, tag_dataset, tagger_kwargs
from .taggers.reward import check_reward_model


class Context:
    """What a stage function needs: the parsed config, and the engine of the model role it uses (lazy)."""

    def __init__(self, margs, iargs, rargs, mtargs, targs, fargs, eargs, pargs, run):
        self.parsed = (margs, iargs, rargs, mtargs, targs, fargs, eargs, pargs, run)
        self.margs, self.iargs, self.rargs, self.mtargs = margs, iargs, rargs, mtargs
        self.targs, self.fargs, self.eargs, self.pargs, self.run = targs, fargs, eargs, pargs, run
        self._engines: dict = {}
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

    def generator(self):
        return self.margs.role()

    def responder(self):
        return self.rargs.response_role(self.margs.role())

    def card_info(self) -> dict:
        return {"profile": self.run.profile, "recipe": Path(self.run.output_dir).name}


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[..., dict]  # the stage function (a module-level function: it travels by reference)
    args: Callable[[Context, object, Path | None, Path], tuple[tuple, dict]]  # (c, engine, src, out) -> its arguments
    out: str                 # its folder: a name of core.layout.FOLDERS
    inputs: tuple[str, ...]  # upstream stages, nearest first: the first one this run makes or finds is read
    count: str               # the counts key that the summary line reports
    unit: str
    model: Callable[[Context], object] | None = None  # the ModelRole whose engine the stage uses, if any
    config: Callable[[Context, Path | None], dict] | None = None  # what a finished output is keyed by (model stages)
    limits: tuple[str, ...] = ()  # its keys of generated tokens, which the model's context must hold
    validate: Callable[[Context], None] | None = None  # checks of its values, before anything loads or is written
    after: Callable[[Callable, Path, dict], None] | None = None  # (log, out, counts): W&B tables, plots, notes
    cluster_kw: bool = False  # a stage without a model role that still sends shards to the cluster (its own models)
    # (c, role) -> the roles of its own models that `role`'s engine can serve (same model and settings), when all of
    # them can: the stage then joins the segment holding that engine and runs on it (the tag stage's judges on the
    # generator's vLLM engine: one build for the run). Empty: a segment of its own.
    shares: Callable[[Context, object], list] | None = None

    def check(self, c: Context) -> None:
        if self.model is not None:  # a max_model_len given in the config is known before any model loads
            role = self.model(c)
            check_context(c.limits(self.limits), role.max_model_len, role.model)
        if self.validate is not None:
            self.validate(c)

    def done(self, c: Context, src, out) -> bool:
        """Whether a finished output of this config is on disk (read back: no process, no model)."""
        if self.config is None or (src is not None and not store.DatasetDir(src).complete):
            return False
        return store.DatasetDir(out).reusable(self.config(c, src)) is not None

    def run_here(self, c: Context, src, out, held=None) -> dict:
        """`held`: the role whose engine this process holds, for a stage that `shares` it."""
        engine = None
        if self.model is not None:
            engine = DriverView(self.model(c)) if c.cluster is not None else \
                c.engine(self.model(c), c.limits(self.limits))
        args, kwargs = self.args(c, engine, src, out)
        if c.cluster is not None and (self.model is not None or self.cluster_kw):
            kwargs["cluster"] = c.cluster
        lent = []
        if held is not None and self.shares is not None and (roles := self.shares(c, held)):
            lazy = c.engine(held)  # built on first use: a stage whose output is complete never builds it
            for r in roles:  # whoever asks for these roles' shared engine gets the one held here
                kw = r.engine_kwargs()
                lent.append(registry.lend(lazy, r.engine, kw.pop("model"), **kw))
            kwargs["held"] = (held.model,)
        try:
            return self.fn(*args, **kwargs)
        finally:
            registry.take_back(*lent)


def segments(names: list[str], c: Context) -> list[list[str]]:
    """The run cut where the model changes: consecutive stages on one model role (instructions -> responses ->
    multiturn on the generator), with the stages between them that load no model (filter, export, the preference
    prompts), share one process and one engine. A stage that loads models of its own (tag, preference scores) is a
    segment by itself."""
    out: list[list[str]] = []
    held: list = []  # per segment: its model role (None: none yet), or False where it loads models of its own
    for name in names:
        s = STAGES[name]
        role = s.model(c) if s.model is not None else None
        if out and not s.cluster_kw and held[-1] is not False and (role is None or held[-1] in (None, role)):
            out[-1].append(name)
            held[-1] = held[-1] or role
        elif out and held[-1] and s.shares is not None and s.shares(c, held[-1]):
            out[-1].append(name)  # its models are the held one's: it runs on that engine
        else:
            out.append([name])
            held.append(False if s.cluster_kw else role)
    return out


def place_segment(segment: list[str], names: list[str], c: Context) -> None:
    """Run a segment where core.procs.place puts it: in a process of its own when its model needs one and some of
    its output is missing, else here (on a Ray cluster: here, the actors loading the model)."""
    role = next((STAGES[n].model(c) for n in segment if STAGES[n].model is not None), None)
    local = c.cluster is not None  # a Ray driver: the actors load the model
    own = role is not None and not local and procs.isolate(role.engine)
    if role is None or local or own:
        c.close()  # one model at a time: taggers, actors and stage processes load their own
    done = True
    if own:
        layout = layout_of(c)
        for n in segment:  # in order: a stage's input is the one before it
            s = STAGES[n]
            if (s.model is not None or s.shares is not None) and not s.done(c, source(s, names, layout),
                                                                               getattr(layout, s.out)):
                done = False
                break
    procs.place(run_segment, segment, names, c.parsed, engines=(role.engine,) if role else (), done=done,
                local=local, here=lambda: _run_here(segment, names, c))


def run_segment(segment: list[str], names: list[str], parsed: tuple) -> None:
    """A segment in this process, from its parsed config (what a segment's own process runs)."""
    c = Context(*parsed)
    try:
        _run_here(segment, names, c)
    finally:
        c.close()


def _run_here(segment: list[str], names: list[str], c: Context) -> None:
    layout = layout_of(c)
    group = c.run.wandb_group or layout.root.name
    log_cfg = {"profile": c.run.profile,
               **stage_config(c.margs, c.iargs, c.rargs, c.mtargs, c.targs, c.fargs, c.eargs, c.pargs)}
    held = next((STAGES[n].model(c) for n in segment if STAGES[n].model is not None), None)
    for name in segment:
        stage, out = STAGES[name], getattr(layout, STAGES[name].out)
        with tracking.stage_run(name, log_cfg, layout.root, c.run.report_to, c.run.wandb_project, group) as log:
            t0 = time.perf_counter()
            counts = stage.run_here(c, source(stage, names, layout), out, held=held)
            dt = time.perf_counter() - t0
            n = counts.get(stage.count, 0)
            log({f"{name}/{k}": v for k, v in counts.items() if isinstance(v, (int, float))}
                | {f"{name}/per_min": n / dt * 60})
            if stage.after is not None:
                stage.after(log, out, counts)
        print(summary(name, n, stage.unit, dt, out, counts), flush=True)
        _warn_emptied(counts)
        _record_time(layout.root, name, dt, counts)


# -- what each stage checks first, and does after --------------------------------------------------------------
def _check_multiturn(c: Context) -> None:
    if c.responder() != c.generator():
        raise ValueError("multiturn answers every turn with the generator; a response_model of its own applies to "
                         "the responses stage only: run multiturn without the response_* keys")


def _check_pair_scorer(c: Context) -> None:
    role = c.pargs.pref_reward_role()
    check_reward_model(role.model, role.trust_remote_code, key="pref_reward_model")


def _log_tables(log, out: Path, counts: dict) -> None:
    """Tag histograms and the filter funnel as W&B tables and images (the funnel also as funnel.png)."""
    ds = store.DatasetDir(out)
    funnel = (ds.manifest() or {}).get("funnel")
    if funnel:
        stats.plot_funnel(funnel, out / "funnel.png")
    log(stats.wandb_tables(ds, funnel))  # streamed: the tags and lengths it bins, a batch at a time


def _after_filter(log, out: Path, counts: dict) -> None:
    _log_tables(log, out, counts)
    if counts.get("funnel"):
        print(format_funnel(counts["funnel"]))


def _warn_emptied(counts: dict) -> None:
    if counts.get("emptied_by"):
        print(f"WARNING: the filter kept 0 of {counts['input']:,} rows: {counts['emptied_by']!r} removed the "
              "last ones; loosen it (python -m synth presets) or check the tags", file=sys.stderr)


def _export_args(c: Context, engine, src, out):
    name = c.eargs.export_name or f"{Path(c.run.output_dir).name}-{c.fargs.filter_preset or 'custom'}"
    return (src, out, name), dict(card_info=c.card_info(), push_to_hub=c.eargs.push_to_hub, **_release_kw(c))


def _release_kw(c: Context) -> dict:
    """The export keys both exports take: the layout and the cards' licences."""
    return {"export_format": c.eargs.export_format, "model_license": c.eargs.model_license,
            "data_license": c.eargs.data_license}


def _pairs_args(c: Context, engine, src, out):
    name = c.pargs.pref_export_name or f"{Path(c.run.output_dir).name}-dpo"
    return (src, out, name), dict(card_info=c.card_info(), **_release_kw(c))


STAGES = {s.name: s for s in (
    Stage("instructions", generate_instructions, lambda c, e, src, out: ((e, c.margs, c.iargs, c.run, out), {}),
          "instructions", (), "kept", "instructions", model=Context.generator,
          config=lambda c, src: instructions_config(c.margs, c.iargs), limits=("max_tokens",)),
    Stage("responses", generate_responses, lambda c, e, src, out: ((e, c.margs, c.rargs, src, out), {}),
          "responses", ("instructions",), "pairs", "pairs", model=Context.responder,
          config=lambda c, src: responses_config(c.margs, c.rargs, src), limits=("response_max_tokens",)),
    Stage("multiturn", generate_multiturn,
          lambda c, e, src, out: ((e, c.margs, c.mtargs, c.rargs, src, out), {"seed": c.iargs.seed}),
          "multiturn", ("responses",), "conversations", "conversations", model=Context.generator,
          config=lambda c, src: multiturn_config(c.margs, c.mtargs, c.rargs, src, c.iargs.seed),
          limits=("mt_max_tokens", "response_max_tokens"), validate=_check_multiturn),
    Stage("tag", tag_dataset,
          lambda c, e, src, out: ((src, out, tagger_kwargs(c.targs)), {"batch_size": c.targs.tag_batch_size}),
          "tagged", ("multiturn", "responses"), "records", "records", validate=lambda c: tagger_kwargs(c.targs),
          after=_log_tables, cluster_kw=True,
          shares=lambda c, role: generating_roles(c.targs) if c.cluster is None and shares_engine(c.targs, role)
          else []),
    Stage("filter", filter_dataset,
          lambda c, e, src, out: ((src, out, c.fargs.filter_preset), dict(
              size=c.fargs.filter_size, expression=c.fargs.filter_expression, seed=c.fargs.filter_seed)),
          "filtered", ("tag",), "kept", "records",
          validate=lambda c: validate(c.fargs.filter_preset, c.fargs.filter_expression, c.fargs.filter_size),
          after=_after_filter),
    Stage("export", export, _export_args, "export", ("filter", "tag"), "records", "records"),
    Stage("preference_prompts", select_prompts, lambda c, e, src, out: ((src, out, c.pargs), {}), "pref_prompts",
          ("tag",), "kept", "instructions", validate=lambda c: validate(c.pargs.pref_preset, None, c.pargs.pref_size)),
    Stage("preferences", sample_preferences, lambda c, e, src, out: ((e, c.responder(), c.pargs, src, out), {}),
          "pref_samples", ("preference_prompts",), "instructions", "prompts", model=Context.responder,
          config=lambda c, src: preferences_config(c.responder(), c.pargs, src), limits=("pref_max_tokens",)),
    Stage("preference_scores", score_preferences, lambda c, e, src, out: ((src, out, c.pargs), {}), "pref_scored",
          ("preferences",), "pairs", "pairs", validate=_check_pair_scorer, cluster_kw=True),
    Stage("preference_pairs", export_preferences, _pairs_args, "pref_export", ("preference_scores",), "pairs",
          "pairs", after=lambda log, out, counts: log(wandb_logs(out))),
)}
# Names that stand for several stages, in a config's `stages` and as verbs: the preference data's four folders
# (`stages: [..., preferences, preference_pairs]` in the recipes; `python -m synth preferences` runs all four).
GROUPS = {"preferences": ("preference_prompts", "preferences"), "preference_pairs": ("preference_scores",
                                                                                  "preference_pairs")}
VERB_STAGES = {"preferences": (*GROUPS["preferences"], *GROUPS["preference_pairs"])}


def expand(names) -> list[str]:
    """A config's `stages` with every group name replaced by its stages, each stage once, in order."""
    out = []
    for n in names:
        for s in GROUPS.get(n, (n,)):
            if s not in out:
                out.append(s)
    return out


def summary(stage: str, n: int, unit: str, seconds: float, out: Path, counts: dict) -> str:
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


def plan(names: list[str], c: Context) -> list[str]:
    """The stages to run, every value they use checked: nothing has loaded or been written yet."""
    names = expand(names)
    for s in names:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r} in stages; choose from {', '.join(STAGES)}")
    for s in names:
        STAGES[s].check(c)
    store.check_output_dir(c.run.output_dir)
    if c.cluster is not None:  # reachable, big enough for each model, and seeing output_dir: before any writing
        c.cluster.connect()
        for s in names:
            if STAGES[s].model is not None:
                role = STAGES[s].model(c)
                c.cluster.layout(role.model, role.tensor_parallel_size, role.engine != "openai")
        c.cluster.check_storage(Path(c.run.output_dir).absolute())
    return names


def layout_of(c: Context) -> RunLayout:
    # Actors on other machines resolve paths in their own working directory: give them absolute ones.
    return RunLayout(Path(c.run.output_dir).absolute() if c.cluster is not None else Path(c.run.output_dir))


def source(stage: Stage, names: list[str], run: RunLayout) -> Path | None:
    """A stage reads the nearest upstream stage that this run makes or that is on disk."""
    for s in stage.inputs:
        if s in names or (getattr(run, STAGES[s].out) / store.MANIFEST).exists():
            return getattr(run, STAGES[s].out)
    return getattr(run, STAGES[stage.inputs[-1]].out) if stage.inputs else None


TIMES = "stage_times.jsonl"  # one line per stage run: what `python -m synth plan` scales up


def _record_time(root: Path, name: str, seconds: float, counts: dict) -> None:
    """The stage's wall time (engine builds included) and its compute time (`seconds` of a shard-written stage:
    the shards alone), beside its numbers, appended to <output_dir>/stage_times.jsonl."""
    import json

    nums = {k: v for k, v in counts.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    line = {"stage": name, "wall_seconds": round(seconds, 3), "at": time.time(), **nums}
    with open(root / TIMES, "a") as f:
        f.write(json.dumps(line) + "\n")


def run(names: list[str], c: Context) -> int:
    """Run `names` in order: all checked first, then each segment (stages on one model) placed and run, each stage
    summarized and logged."""
    names, layout = plan(names, c), layout_of(c)
    if names and STAGES[names[0]].inputs:  # fail on a missing input before loading a model
        store.DatasetDir(source(STAGES[names[0]], names, layout)).require_complete()
    for segment in segments(names, c):
        place_segment(segment, names, c)
    return 0
