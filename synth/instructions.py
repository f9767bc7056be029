"""Step 1 of MAGPIE: sample user instructions from the pre-query template alone.

The aligned model gets nothing but the left part of its chat template, up to where a user
message would start, e.g. Llama-3's `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n`.
Being autoregressive, it continues with a plausible user query. One prompt per round, `n`
samples each (paper: n=200, cheap with prefix caching), and all rounds of a shard in one engine call, each
with its own sampling; stop at the end-of-turn markers and, by default, at the first newline so that an
instruction is one paragraph. A steered run (synth/steering.py: prefill, system prompts, personas, topics, language)
gives each sample a prompt of its own, built from the steer it draws.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from core import shards, store, templates
from core.config import ModelArgs, stage_config
from core.engines import SEED_SCHEME, Sampling, sample_seed, stream_seed

from . import control, sanitize, steering
from .config import MIXES, InstructionArgs, RunArgs, offered_tools

log = logging.getLogger(__name__)

def allocate(total: int, weights: list[float]) -> list[int]:
    """Split `total` by `weights` (largest remainder), so that shares are exact and sum to total."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


def mix_cells(args: InstructionArgs) -> list[tuple[float, float, int]]:
    """(temperature, top_p, count) per cell of the chosen mix."""
    if args.mix == "single":
        return [(args.temperature, args.top_p, args.total_prompts)]
    cells = MIXES[args.mix]
    return [(t, p, c) for (t, p, _), c in zip(cells, allocate(args.total_prompts, [w for *_, w in cells])) if c]


@dataclass(frozen=True)
class Round:
    index: int  # global round number: fixes the seed and the record ids
    temperature: float
    top_p: float
    count: int  # samples this round (n, or the rest of its cell)


def plan(args: InstructionArgs) -> list[Round]:
    rounds = []
    for t, p, count in mix_cells(args):
        for start in range(0, count, args.n):
            rounds.append(Round(len(rounds), t, p, min(args.n, count - start)))
    return rounds


def resolve_template(engine, margs: ModelArgs, iargs: InstructionArgs) -> tuple[templates.Template, list[str]]:
    """The pre-query template and the stop strings for instruction sampling.

    Derived from the model's chat template; `pre_query_template` / `stop_strings` in the config
    replace the derived values (the way to use a model without a chat template).
    """
    import dataclasses

    tok = engine.tokenizer
    kwargs = template_kwargs(margs, iargs)
    try:
        tpl = templates.from_tokenizer(tok, margs.model, kwargs) if tok is not None else None
    except templates.NoChatTemplate:
        if margs.pre_query_template is None:
            raise
        tpl = None
    if margs.pre_query_template is not None:
        base = tpl or templates.Template("", tuple(s for s in (tok.eos_token, tok.bos_token) if s) if tok else (), "")
        tpl = dataclasses.replace(base, pre_query_template=margs.pre_query_template,
                                  notes=base.notes + ("pre_query_template given in config",))
    if tpl is None:
        raise templates.NoChatTemplate(f"engine {engine.info.name} has no tokenizer for {margs.model}; pass "
                                       "--pre-query-template and --stop-strings")
    system = control.system_prompt_for(iargs.control, iargs.system_prompt)
    if system is not None and margs.pre_query_template is None and not steering.Steering.from_args(iargs).drawn:
        # (a steered run renders each record's system turn itself: steering.Prompter)
        tpl = dataclasses.replace(tpl, pre_query_template=templates.pre_query_with_system(
            tok.chat_template, system, tok.bos_token, tok.eos_token, kwargs),
            notes=tpl.notes + (f"system prompt: {system}",))
    # A derived stop list leaves out <think> and </think>: a model that thinks where a user's request belongs (Magpie
    # issue #10) is then seen doing it, and dropped as thinking_instead, not cut to an empty or partial request.
    stops = (list(margs.stop_strings) if margs.stop_strings is not None
             else [s for s in tpl.stop_strings if s not in templates.REASONING_TAGS])
    newline = tpl.newline_stop if iargs.newline_stop is None else iargs.newline_stop
    if iargs.newline_stop is None and iargs.control in control.NO_NEWLINE_STOP:
        newline = False
        tpl = dataclasses.replace(tpl, sanitize=True)
    if newline:
        stops.append("\n")  # reference gen_ins.py --early_stopping (default on)
    return tpl, stops


def template_kwargs(margs: ModelArgs, iargs: InstructionArgs) -> dict:
    """The variables every render of step 1 gets: the role's, and the tools (tool-call data) where set."""
    return margs.role().template_kwargs() | ({"tools": offered_tools(iargs.tools)} if iargs.tools else {})


def instructions_config(margs: ModelArgs, iargs: InstructionArgs) -> dict:
    """The config an instructions directory is keyed by: a finished one with this config can be reused (and only
    shards drawn under the same seed scheme are resumed). The steering keys count only when set (a run without
    them keeps its key), and then as the entries they read: an edited data file is another config."""
    cfg = {k: v for k, v in stage_config(margs, iargs).items() if k not in steering.KEYS or v is not None}
    cfg.pop("tools", None)  # as the steering keys: counted only when set, and then as the schemas (an edited file counts)
    cfg |= {"tools": offered_tools(iargs.tools)} if iargs.tools else {}
    steer = steering.Steering.from_args(iargs)
    return {**cfg, "seed_scheme": SEED_SCHEME, **({"steering": steer.to_dict()} if steer.drawn else {})}


def round_seed(seed: int, rnd: Round) -> int:
    """The seed of a round's prompt; its sample j draws from sample_seed(round_seed, j). Keyed by the global round
    only, so that neither the shard layout nor the engine's batches change which stream a record drew."""
    return stream_seed(seed, "instructions", rnd.index)


def generate_instructions(engine, margs: ModelArgs, iargs: InstructionArgs, rargs: RunArgs, out_dir,
                          cluster=None) -> dict:
    """Write `out_dir` (a dataset directory) with the instructions; resumes what is there. A finished run of
    this config is reused without touching `engine` (which may be lazy: nothing loads then). `cluster`: a
    core.cluster.Cluster whose actors compute the shards (`engine` then only lends its tokenizer)."""
    ds = store.DatasetDir(out_dir)

    def prepare():
        tpl, stops = resolve_template(engine, margs, iargs)
        do_clean = tpl.sanitize if iargs.sanitize is None else iargs.sanitize
        stop_ids = templates.stop_token_ids(engine.tokenizer, stops) if engine.tokenizer is not None else []
        rounds = plan(iargs)
        groups = [rounds[i:i + iargs.rounds_per_shard] for i in range(0, len(rounds), iargs.rounds_per_shard)]
        steer = steering.Steering.from_args(iargs)
        if steer.drawn:
            tok = engine.tokenizer
            chat_template = None if margs.pre_query_template is not None or tok is None else tok.chat_template
            steer = steering.Prompter(steer, tpl.pre_query_template, chat_template,
                                      getattr(tok, "bos_token", None), getattr(tok, "eos_token", None),
                                      json.dumps(template_kwargs(margs, iargs), sort_keys=True, default=str))
        elif not steer.active:
            steer = None
        work = shards.ShardWork(str(ds.path), sample_shard, role=margs.role(), args=(
            margs.model, iargs, tpl.pre_query_template, tuple(stops), tuple(stop_ids), do_clean, steer,
            json.dumps(offered_tools(iargs.tools), ensure_ascii=False) if iargs.tools else None))
        manifest = dict(model=margs.model, engine=engine.info.name, template=tpl.to_dict(), stop=stops,
                        stop_token_ids=stop_ids)
        return work, [(k, g, sum(r.count for r in g)) for k, g in enumerate(groups)], manifest

    return shards.write_stage(ds, "instructions", instructions_config(margs, iargs), prepare, summarize, engine,
                              desc="instructions", unit="ins", cluster=cluster)


def sample_shard(engine, rounds: list[Round], model: str, iargs: InstructionArgs, pre_query_template: str,
                 stops: tuple, stop_ids: tuple, do_clean: bool,
                 steer: steering.Steering | steering.Prompter | None = None,
                 tools: str | None = None) -> tuple[list[dict], dict]:
    """One shard of step 1: its rounds go to the engine in one call, each with its own sampling (a Table 7 mix
    shares the call), so that vLLM schedules all of them together instead of idling at the end of every round.

    `steer`: None (plain MAGPIE), a Steering fixed for the run (control / system_prompt: already in
    `pre_query_template`, only recorded), or a Prompter: then sample j of a round draws its steer from
    stream_seed(round seed, "steer", j) and is a prompt of its own, seeded sample_seed(round seed, j)."""
    samplings = [Sampling(temperature=rnd.temperature, top_p=rnd.top_p, max_tokens=iargs.max_tokens,
                          n=rnd.count, stop=stops, stop_token_ids=stop_ids,
                          seed=round_seed(iargs.seed, rnd)) for rnd in rounds]
    # Per sample: (round, j, the seed of its stream, its steer, its pre-query template), in the call's order.
    if isinstance(steer, steering.Prompter):
        samples, prompts, per = [], [], []
        for rnd, sampling in zip(rounds, samplings):
            for j in range(rnd.count):
                choice = steer.steering.draw(stream_seed(sampling.seed, "steer", j))
                pre_query, prompt = steer.prompt(choice)
                per.append(sampling.replace(n=1, seed=sample_seed(sampling.seed, j)))
                samples.append((rnd, j, sample_seed(per[-1].seed, 0), choice, pre_query))
                prompts.append(prompt)
        completions = [c for row in engine.complete(prompts, per) for c in row]
    else:
        fixed = steer.draw(0) if steer is not None else None  # one steer for the run: nothing is drawn
        samples = [(rnd, j, sample_seed(sampling.seed, j), fixed, pre_query_template)
                   for rnd, sampling in zip(rounds, samplings) for j in range(rnd.count)]
        completions = [c for row in engine.complete([pre_query_template] * len(samplings), samplings) for c in row]
    records, dropped, tokens = [], {r: 0 for r in sanitize.REASONS}, 0
    sampled_by, kept_by = {}, {}  # per steer value ("persona: a retired nurse"): its samples, and those kept
    for (rnd, j, seed, choice, pre_query), c in zip(samples, completions, strict=True):
        tokens += c.num_tokens
        keys = [f"{kind}: {value}" for kind, value in (choice or {}).items()]
        for key in keys:
            sampled_by[key] = sampled_by.get(key, 0) + 1
        stub = (choice or {}).get("prefill", "")
        raw = (stub + c.text).strip()  # a prefilled instruction begins with its stub: the model wrote the rest
        instruction = sanitize.clean(raw) if do_clean else raw
        reason = "empty" if stub and not c.text.strip() else sanitize.check(instruction, c.finish_reason)
        if reason:
            dropped[reason] += 1
            continue
        record = {
            "id": rnd.index * iargs.n + j,
            "pre_query_template": pre_query,
            "instruction": instruction,
            "raw_instruction": raw,
            "gen_input_configs": {
                "temperature": rnd.temperature, "top_p": rnd.top_p, "max_tokens": iargs.max_tokens,
                "input_generator": model, "engine": engine.info.name,
                "seed": seed, "seed_scheme": SEED_SCHEME,
                "stop": list(stops), "sanitized": bool(do_clean),
            },
        }
        if choice is not None:
            record["steer"] = dict(choice)
        if tools is not None:  # the tools (JSON) its pre-query template showed: the answer is written with them
            record["tools"] = tools
        for key in keys:
            kept_by[key] = kept_by.get(key, 0) + 1
        records.append(record)
    meta = {"kept": len(records), "dropped": dropped, "tokens": tokens, "sampled": sum(r.count for r in rounds)}
    return records, meta | ({"steer_sampled": sampled_by, "steer_kept": kept_by} if steer is not None else {})


def summarize(t: dict) -> dict:
    """The counts of step 1 from its shards' totals."""
    out = {"sampled": t.get("sampled", 0), "kept": t.get("kept", 0), "tokens": t.get("tokens", 0),
           "dropped": {r: 0 for r in sanitize.REASONS} | t.get("dropped", {})}
    if t.get("steer_sampled"):  # per steer value ("persona: a retired nurse"), most sampled first
        kept = t.get("steer_kept", {})
        out["by_steer"] = {k: {"sampled": n, "kept": kept.get(k, 0)}
                           for k, n in sorted(t["steer_sampled"].items(), key=lambda kv: (-kv[1], kv[0]))}
    return out
