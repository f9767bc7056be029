"""Answer a prompt set through the model's normal chat template: MAGPIE's step 2, and eval's answers.

Greedy, up to 4096 new tokens, stopping only at the model's end-of-turn tokens (paper
section 2; reference gen_res.py). Records gain `response`, `messages` (the TRL conversational
format) and `gen_response_configs`. A thinking model's answers are sampled as its card says and
split (core/reasoning.py): `reasoning` holds the thinking, `reasoning_closed` whether it ended,
`response` and `messages` the answer alone. A record offering `tools` gains `tool_calls`
(core/tools.py), each call checked against its tool's schema.
"""
from __future__ import annotations

import json
import sys

from . import reasoning, shards, store, templates, tools
from .config import ModelArgs, ResponseArgs, stage_config
from .engines import SEED_SCHEME, Sampling, stream_seed, too_long_count


def answer_template(engine, model: str) -> templates.Template | None:
    """The template answers are written through (None: an engine without a local tokenizer, e.g. a served model)."""
    if engine.tokenizer is None:
        return None
    return templates.from_tokenizer(engine.tokenizer, model, getattr(engine, "template_kwargs", None))


def chat_sampling(engine, model: str, tpl: templates.Template | None = None, **kw) -> Sampling:
    """Sampling for an answer through the chat template: it stops at the model's end-of-turn ids only, as the paper
    (the answer is free to contain newlines). Harmony's channels are special tokens the answer must keep."""
    tpl = tpl or answer_template(engine, model)
    stops = tpl.response_stop_strings if tpl else ()
    stop_ids = templates.stop_token_ids(engine.tokenizer, stops) if tpl else []
    keep = tpl is not None and tpl.reasoning_format == "harmony"
    return Sampling(stop_token_ids=tuple(stop_ids), **({"skip_special_tokens": False} if keep else {}), **kw)


PAPER_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "top_k": 0}  # paper section 2, reference gen_res.py: greedy


def resolve_sampling(rargs: ResponseArgs, model: str, tpl: templates.Template | None) -> tuple[dict, str | None]:
    """(temperature, top_p, top_k) of the answers and, where they are not the paper's greedy or ought not to be, a
    line saying why. Keys the config sets are kept as set; with none set, a thinking model samples as its card says."""
    given = {k: v for k, v in (("temperature", rargs.response_temperature), ("top_p", rargs.response_top_p),
                               ("top_k", rargs.response_top_k)) if v is not None}
    if given or tpl is None or not reasoning.thinks(tpl):
        return PAPER_SAMPLING | given, None
    card = reasoning.card_sampling(model)
    if card is None:
        return dict(PAPER_SAMPLING), (f"{model} answers with reasoning ({tpl.reasoning_format}), and its card's sampling "
                                      "is not known here (core/reasoning.py CARDS): greedy, as the paper, which thinking "
                                      "models repeat under; set response_temperature/response_top_p")
    return PAPER_SAMPLING | card.thinking, (
        f"{model} answers with reasoning: sampled as its card recommends, "
        f"{', '.join(f'{k}={v}' for k, v in card.thinking.items())}, not the paper's greedy ({card.source}); set "
        "response_temperature/response_top_p/response_top_k to choose")


def response_sampling(engine, rargs: ResponseArgs, model: str) -> Sampling:
    tpl = answer_template(engine, model)
    values, note = resolve_sampling(rargs, model, tpl)
    if note:
        print(f"[sampling] {note}", file=sys.stderr, flush=True)
    return chat_sampling(engine, model, tpl, max_tokens=rargs.response_max_tokens,
                         repetition_penalty=rargs.response_repetition_penalty, seed=0, **values)


def responses_config(margs: ModelArgs, rargs: ResponseArgs, in_dir) -> dict:
    """The config a responses directory is keyed by: a finished one with this config can be reused."""
    return {**stage_config(margs, rargs), "input_id": store.DatasetDir(in_dir).identity(), "seed_scheme": SEED_SCHEME}


def generate_responses(engine, margs: ModelArgs, rargs: ResponseArgs, in_dir, out_dir, cluster=None) -> dict:
    """Answer every instruction of `in_dir` into `out_dir` (synth's responses stage, eval's answers), shard by
    shard; a finished directory of this config is reused without touching `engine`."""
    src, ds = store.DatasetDir(in_dir), store.DatasetDir(out_dir)
    role = rargs.response_role(margs.role())  # the generator, unless a response model of its own is set

    def prepare():
        sampling = response_sampling(engine, rargs, role.model)
        tpl = answer_template(engine, role.model)
        gen_cfg = {**sampling.to_dict(), "output_generator": role.model, "engine": engine.info.name}
        work = shards.ShardWork(str(ds.path), answer_shard, role=role,
                                args=(str(src.path), sampling, gen_cfg, tpl, rargs.keep_reasoning))
        manifest = dict(model=role.model, instruction_model=margs.model, engine=engine.info.name, input=str(in_dir),
                        sampling=sampling.to_dict(), reasoning_format=tpl and tpl.reasoning_format,
                        tool_format=tpl and tpl.tool_format)
        # Shard k answers input rows [k * response_batch_size, ...): read shard by shard, never the whole set.
        return work, shards.row_ranges(src.num_rows(), rargs.response_batch_size), manifest

    return shards.write_stage(ds, "responses", responses_config(margs, rargs, in_dir), prepare, summarize, engine,
                              desc="responses", unit="res", cluster=cluster)


def summarize(t: dict) -> dict:
    """The counts of the responses stage from its shards' totals; the reasoning and tool-call counts only where the
    answers had any (a plain run's counts stay as they were)."""
    out = {"pairs": t.get("kept", 0), "truncated": t.get("truncated", 0), "tokens": t.get("tokens", 0),
           "prompt_too_long": t.get("prompt_too_long", 0)}
    if "reasoning" in t:
        out |= {"reasoning": t["reasoning"], "reasoning_unclosed": t.get("reasoning_unclosed", 0)}
    if "tool_answers" in t:
        out |= {k: t.get(k, 0) for k in ("tool_answers", "tool_calls", "no_tool_call")}
        out["dropped"] = {"tool_call_" + e: 0 for e in tools.ERRORS} | t.get("dropped", {})
    return out


def answer_shard(engine, rows: tuple[int, int], in_dir: str, sampling: Sampling, gen_cfg: dict,
                 tpl: templates.Template | None = None, keep_reasoning: bool = False):
    """One shard of step 2: its instructions in one call (the engine batches it; vLLM keeps its batch full). A thinking
    model's reasoning goes to `reasoning` (`messages` holds the answer alone unless keep_reasoning); a record with
    `tools` (tool-call data) is answered with them, and its calls parsed, checked and kept as `tool_calls`."""
    batch = shards.input_rows(in_dir, *rows)
    before = too_long_count(engine)
    # Greedy by default (the paper); a sampled answer (response_temperature > 0) draws a stream of its own record's
    # A record with a `history` (earlier turns, e.g. WildBench's multi-turn tasks) is answered in that conversation.
    convs = [[*(r.get("history") or []), {"role": "user", "content": r["instruction"]}] for r in batch]
    samplings = [sampling.replace(seed=stream_seed(sampling.seed, "responses", r["id"])) for r in batch]
    offered = [json.loads(r["tools"]) if r.get("tools") else None for r in batch]
    if any(offered):  # rendered here with each record's tools; the calls' markup may be special tokens
        prompts = [engine.render_chat(c, tools=t) for c, t in zip(convs, offered)]
        outs = engine.complete(prompts, [s.replace(skip_special_tokens=False) for s in samplings])
    else:
        outs = engine.chat(convs, samplings)
    records, tokens, counts = [], 0, {"truncated": 0}
    # a reasoning template, or a server that parsed the reasoning out itself (Completion.reasoning)
    thinking = (tpl is not None and tpl.reasoning_format is not None) or any(c.reasoning is not None
                                                                            for row in outs for c in row)
    if thinking:
        counts |= {"reasoning": 0, "reasoning_unclosed": 0}
    if any(offered):
        counts |= {"tool_answers": 0, "tool_calls": 0, "no_tool_call": 0, "dropped": {}}
    skipped = too_long_count(engine) - before  # kept, with an empty "length" response
    for r, conv, offer, (c, *_) in zip(batch, convs, offered, outs):
        counts["truncated"] += c.finish_reason == "length"
        tokens += c.num_tokens
        parts = reasoning.split_completion(c, tpl)
        record = {}
        if thinking:
            record |= {"reasoning": parts.reasoning, "reasoning_closed": parts.closed}
            counts["reasoning"] += parts.reasoning is not None
            counts["reasoning_unclosed"] += not parts.closed
        answer, calls = parts.answer, None
        if offer:
            fmt = tpl.tool_format if tpl else None
            # Harmony's calls are messages of their own in the raw answer; the other families write them in the answer
            rest, found = tools.parse(c.text if fmt == "harmony" else parts.answer, fmt)
            answer = parts.answer if fmt == "harmony" else rest
            errors = [e for e in (tools.check(call, offer) for call in found) if e]
            if errors:  # a training example must not teach a broken call: the record goes, counted by its first error
                key = "tool_call_" + errors[0]
                counts["dropped"][key] = counts["dropped"].get(key, 0) + 1
                continue
            calls = [call.trl() for call in found] or None
            counts["tool_answers"] += bool(calls)
            counts["tool_calls"] += len(found)
            counts["no_tool_call"] += not calls
            record["tool_calls"] = calls
        records.append({**r, "response": answer,
                        "messages": [*conv, reasoning.message("assistant", answer, parts, keep_reasoning, calls)],
                        "gen_response_configs": gen_cfg, "response_finish_reason": c.finish_reason, **record})
    return records, {"kept": len(records), **counts, "tokens": tokens, "prompt_too_long": skipped}
