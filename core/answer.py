"""Answer a prompt set through the model's normal chat template: MAGPIE's step 2, and eval's answers.

Greedy, up to 4096 new tokens, stopping only at the model's end-of-turn tokens (paper
section 2; reference gen_res.py). Records gain `response`, `messages` (the TRL conversational
format) and `gen_response_configs`.
"""
from __future__ import annotations

from . import shards, store, templates
from .config import ModelArgs, ResponseArgs, stage_config
from .engines import SEED_SCHEME, Sampling, stream_seed, too_long_count


def chat_sampling(engine, model: str, **kw) -> Sampling:
    """Sampling for an answer through the chat template: it stops at the model's end-of-turn ids only, as the paper
    (the answer is free to contain newlines)."""
    tpl = templates.from_tokenizer(engine.tokenizer, model) if engine.tokenizer is not None else None
    stops = tpl.stop_strings if tpl else ()
    stop_ids = templates.stop_token_ids(engine.tokenizer, stops) if tpl else []
    return Sampling(stop_token_ids=tuple(stop_ids), **kw)


def response_sampling(engine, rargs: ResponseArgs, model: str) -> Sampling:
    return chat_sampling(engine, model, temperature=rargs.response_temperature, top_p=rargs.response_top_p,
                         max_tokens=rargs.response_max_tokens, repetition_penalty=rargs.response_repetition_penalty,
                         seed=0)


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
        gen_cfg = {**sampling.to_dict(), "output_generator": role.model, "engine": engine.info.name}
        work = shards.ShardWork(str(ds.path), answer_shard, role=role, args=(str(src.path), sampling, gen_cfg))
        manifest = dict(model=role.model, instruction_model=margs.model, engine=engine.info.name, input=str(in_dir),
                        sampling=sampling.to_dict())
        # Shard k answers input rows [k * response_batch_size, ...): read shard by shard, never the whole set.
        return work, shards.row_ranges(src.num_rows(), rargs.response_batch_size), manifest

    return shards.write_stage(ds, "responses", responses_config(margs, rargs, in_dir), prepare, lambda t: {
        "pairs": t.get("kept", 0), "truncated": t.get("truncated", 0), "tokens": t.get("tokens", 0),
        "prompt_too_long": t.get("prompt_too_long", 0)}, engine, desc="responses", unit="res", cluster=cluster)


def answer_shard(engine, rows: tuple[int, int], in_dir: str, sampling: Sampling, gen_cfg: dict):
    """One shard of step 2: its instructions in one call (the engine batches it; vLLM keeps its batch full)."""
    batch = shards.input_rows(in_dir, *rows)
    before = too_long_count(engine)
    # Greedy by default (the paper); a sampled answer (response_temperature > 0) draws a stream of its own record's
    # A record with a `history` (earlier turns, e.g. WildBench's multi-turn tasks) is answered in that conversation.
    convs = [[*(r.get("history") or []), {"role": "user", "content": r["instruction"]}] for r in batch]
    outs = engine.chat(convs, [sampling.replace(seed=stream_seed(sampling.seed, "responses", r["id"])) for r in batch])
    records, truncated, tokens = [], 0, 0
    skipped = too_long_count(engine) - before  # kept, with an empty "length" response
    for r, conv, (c, *_) in zip(batch, convs, outs):
        response = c.text.strip()
        truncated += c.finish_reason == "length"
        tokens += c.num_tokens
        records.append({
            **r,
            "response": response,
            "messages": [*conv, {"role": "assistant", "content": response}],
            "gen_response_configs": gen_cfg,
            "response_finish_reason": c.finish_reason,
        })
    return records, {"kept": len(records), "truncated": truncated, "tokens": tokens, "prompt_too_long": skipped}
