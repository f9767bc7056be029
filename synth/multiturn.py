"""Multi-turn MAGPIE (paper section 3; reference exp/gen_mt.py): extend each conversation by a
follow-up user turn and its answer, `turns - 1` times.

The follow-up is sampled the way step 1 samples the first instruction: render the conversation
so far (with a system turn saying the user holds a multi-round conversation), then append the
multi-turn append template, the text that opens the next user turn, derived from the chat
template; the model writes the user's next message (T=1, newline stop). The answer is generated
from the same history without that system turn, greedy, stopping at the end-of-turn tokens.
A thinking model's answers are split as in step 2 (core/reasoning.py): the history holds the answers alone, and each
turn's thinking goes to `reasoning_<turn>`. Where a template ends a conversation's last answer otherwise than an
earlier one (gpt-oss, Qwen3), the follow-up prompt is cut from the conversation with a next user turn instead.
"""
from __future__ import annotations

from core import reasoning, shards, store, templates
from core.answer import response_sampling
from core.config import ModelArgs, stage_config
from core.engines import SEED_SCHEME, Sampling, stream_seed, too_long_count

from . import sanitize
from .config import MultiTurnArgs


def followup_prompt(engine, tpl: templates.Template, messages: list[dict], system_prompt: str | None) -> str:
    history = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(messages)
    if tpl.followup_by_prefix:  # gpt-oss, Qwen3: the history rendered as finished would end its last answer wrongly
        return templates.followup_prefix(engine.render_chat, history)
    return engine.render_chat(history, add_generation_prompt=False) + tpl.mt_append_template


def multiturn_config(margs: ModelArgs, mt: MultiTurnArgs, response_args, in_dir, seed: int = 0) -> dict:
    """The config a multiturn directory is keyed by: a finished one with this config can be reused."""
    return {**stage_config(margs, mt, response_args), "input_id": store.DatasetDir(in_dir).identity(), "seed": seed,
            "seed_scheme": SEED_SCHEME}


def generate_multiturn(engine, margs: ModelArgs, mt: MultiTurnArgs, response_args, in_dir, out_dir,
                       seed: int = 0, cluster=None) -> dict:
    src, ds = store.DatasetDir(in_dir), store.DatasetDir(out_dir)

    def prepare():
        tpl = templates.from_tokenizer(engine.tokenizer, margs.model, margs.role().template_kwargs())
        if not tpl.mt_append_template:
            raise ValueError(f"could not derive a multi-turn append template for {margs.model}")
        stops = list(tpl.stop_strings) + ["\n"]  # the reference samples follow-ups with the newline stop
        stop_ids = templates.stop_token_ids(engine.tokenizer, stops)
        answer = response_sampling(engine, response_args, margs.model)
        work = shards.ShardWork(str(ds.path), extend_shard, role=margs.role(),
                                args=(str(src.path), mt, tpl, tuple(stops), tuple(stop_ids), answer, seed,
                                      response_args.keep_reasoning))
        manifest = dict(model=margs.model, engine=engine.info.name, input=str(in_dir),
                        mt_append_template=tpl.mt_append_template, stop=stops)
        return work, shards.row_ranges(src.num_rows(), mt.mt_batch_size), manifest

    return shards.write_stage(ds, "multiturn", multiturn_config(margs, mt, response_args, in_dir, seed), prepare,
                              lambda t: {"conversations": t.get("kept", 0), "input": t.get("input", 0),
                                         "tokens": t.get("tokens", 0), "prompt_too_long": t.get("prompt_too_long", 0),
                                         **({"reasoning_unclosed": t["reasoning_unclosed"]}
                                            if "reasoning_unclosed" in t else {}),
                                         "dropped": {r: 0 for r in sanitize.REASONS} | t.get("dropped", {})},
                              engine, desc="multi-turn", unit="conv", cluster=cluster)


def extend_shard(engine, rows: tuple[int, int], in_dir: str, mt: MultiTurnArgs, tpl: templates.Template,
                 stops: tuple, stop_ids: tuple, answer: Sampling, seed: int, keep_reasoning: bool = False):
    """One shard of multi-turn: each turn a follow-up instruction (pre-query continuation of the history), then
    its answer; a conversation whose follow-up fails is dropped whole, counted."""
    batch = shards.input_rows(in_dir, *rows)
    live = [dict(r, messages=list(r["messages"])) for r in batch]
    dropped, tokens, before, unclosed = {r: 0 for r in sanitize.REASONS}, 0, too_long_count(engine), 0
    for turn in range(2, mt.turns + 1):
        follow_up = Sampling(temperature=mt.mt_temperature, top_p=mt.mt_top_p, max_tokens=mt.mt_max_tokens,
                             stop=stops, stop_token_ids=stop_ids)
        # A stream per conversation and turn, keyed by the record's id: not by the shard or the call.
        samplings = [follow_up.replace(seed=stream_seed(seed, "multiturn", r["id"], turn)) for r in live]
        prompts = [followup_prompt(engine, tpl, r["messages"], mt.mt_system_prompt) for r in live]
        outs = engine.complete(prompts, samplings)
        kept = []
        for r, (c, *_) in zip(live, outs):
            tokens += c.num_tokens
            follow = c.text.strip()
            reason = sanitize.check(follow, c.finish_reason)
            if reason:
                dropped[reason] += 1
                continue
            r["messages"].append({"role": "user", "content": follow})
            r[f"instruction_{turn}"] = follow
            kept.append(r)
        live = kept
        replies = engine.chat([r["messages"] for r in live],
                              [answer.replace(seed=stream_seed(answer.seed, "multiturn-answer", r["id"], turn))
                               for r in live])
        for r, (c, *_) in zip(live, replies):
            tokens += c.num_tokens
            parts = reasoning.split_completion(c, tpl)  # a thinking model's reasoning stays out of the history
            r["messages"].append(reasoning.message("assistant", parts.answer, parts, keep_reasoning))
            r[f"response_{turn}"] = parts.answer
            if tpl.reasoning_format is not None:
                r[f"reasoning_{turn}"] = parts.reasoning
                unclosed += not parts.closed
    for r in live:
        r["gen_mt_configs"] = {"turns": mt.turns, "temperature": mt.mt_temperature, "top_p": mt.mt_top_p,
                               "system_prompt": mt.mt_system_prompt, "mt_append_template": tpl.mt_append_template}
    return live, {"kept": len(live), "dropped": dropped, "tokens": tokens, "input": len(batch),
                  "prompt_too_long": too_long_count(engine) - before,
                  **({"reasoning_unclosed": unclosed} if tpl.reasoning_format is not None else {})}
