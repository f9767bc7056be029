"""The released Magpie sets' layout: their columns and Arrow types, and our records written in it.

`export_format: magpie` writes an export (and the preference export) in these columns, so that
`datasets.concatenate_datasets` takes our set and a Magpie-Align set together without a cast, and tools
written for theirs read ours. Three layouts, each copied from the `dataset_info` of released cards on
huggingface.co (the column order is theirs):

    SFT, one turn      Magpie-Align/Magpie-Qwen2-Pro-300K-Filtered, Magpie-Phi3-Pro-300K-Filtered and their
                       1M-v0.1 raw sets (25 columns, with the `*_generator` columns and `min_similar_uuid`)
    SFT, multi-turn    Magpie-Align/Magpie-Llama-3.1-Pro-MT-300K-Filtered (`instruction_2`, `response_2`; the
                       reference's exp/gen_mt.py names turn k `instruction_k`/`response_k`)
    DPO                Magpie-Align/Magpie-Pro-DPO-100K-v0.1 (`responses`, `rewards_armorm` as a list of
                       {score}: exp/gen_po_rewards.py; `chosen`/`rejected` as user + assistant messages:
                       data_po/process_po.ipynb)

The paper's first sets (Magpie-Air/Pro-300K-Filtered: `conversations` and `uuid` only; the v0.1 MT sets:
`input1`/`output1`...) are narrower; train.data reads those too, through `conversations`.

Where the released sets themselves differ, the layout follows the set named above: the pre-query template sits
in `gen_input_configs` as `extract_input` in the one-turn sets and as `pre_query_template` in the Llama-3.1 MT
ones; `seed` there is always null (Arrow null type): our seeds stay in the native export and the manifests.
"""
from __future__ import annotations

import uuid

import pyarrow as pa

_S, _F, _I = pa.string(), pa.float64(), pa.int64()
CONVERSATIONS = pa.list_(pa.struct([("from", _S), ("value", _S)]))
MESSAGES = pa.list_(pa.struct([("content", _S), ("role", _S)]))  # the DPO sets' field order
_FROM = {"user": "human", "assistant": "gpt", "system": "system"}
# The three judge tags and the tag that holds each one's judge (unitag.py writes `<x>_generator` beside them).
GENERATED = {"task_category": "task_category_generator", "difficulty": "difficulty_generator",
             "input_quality": "quality_generator"}


def _gen_input(template_key: str) -> pa.DataType:
    return pa.struct([("temperature", _F), ("top_p", _F), ("input_generator", _S), ("seed", pa.null()),
                      (template_key, _S)])


SFT_SCHEMA = pa.schema([
    ("uuid", _S), ("model", _S), ("gen_input_configs", _gen_input("extract_input")), ("instruction", _S),
    ("response", _S), ("conversations", CONVERSATIONS), ("task_category", _S), ("other_task_category", pa.list_(_S)),
    ("task_category_generator", _S), ("difficulty", _S), ("intent", _S), ("knowledge", _S),
    ("difficulty_generator", _S), ("input_quality", _S), ("quality_explanation", _S), ("quality_generator", _S),
    ("llama_guard_2", _S), ("reward_model", _S), ("instruct_reward", _F), ("min_neighbor_distance", _F),
    ("repeat_count", _I), ("min_similar_uuid", _S), ("instruction_length", _I), ("response_length", _I),
    ("language", _S)])


def mt_schema(turns: int) -> pa.Schema:
    """Magpie-Llama-3.1-Pro-MT-300K-Filtered's columns, with `instruction_k`/`response_k` up to `turns`."""
    later = [(f"{w}_{k}", _S) for k in range(2, turns + 1) for w in ("instruction", "response")]
    return pa.schema([
        ("uuid", _S), ("model", _S), ("gen_input_configs", _gen_input("pre_query_template")),
        ("conversations", CONVERSATIONS), ("instruction", _S), ("response", _S), *later, ("intent", _S),
        ("knowledge", _S), ("difficulty", _S), ("difficulty_generator", _S), ("input_quality", _S),
        ("quality_explanation", _S), ("quality_generator", _S), ("task_category", _S),
        ("other_task_category", pa.list_(_S)), ("task_category_generator", _S), ("llama_guard_2", _S),
        ("instruct_reward", _F), ("reward_model", _S), ("language", _S), ("response_length", _I)])


PREFERENCE_SCHEMA = pa.schema([
    ("uuid", _S), ("instruction", _S),
    ("gen_input_configs", pa.struct([("input_generator", _S), ("temperature", _F), ("top_p", _F)])),
    ("intent", _S), ("knowledge", _S), ("difficulty", _S), ("input_quality", _S), ("quality_explanation", _S),
    ("task_category", _S), ("input_length", _I), ("responses", pa.list_(_S)),
    ("gen_response_configs", pa.struct([
        ("engine", _S), ("max_tokens", _I), ("output_generator", _S), ("prompt", _S), ("repetition_penalty", _F),
        ("stop_tokens", pa.list_(_S)), ("temperature", _F), ("top_p", _F)])),
    ("rewards_armorm", pa.list_(pa.struct([("score", _F)]))), ("chosen", MESSAGES), ("rejected", MESSAGES)])

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/magpie-align/magpie#magpie-repro")


def uuid_of(run_key: str, record_id) -> str | None:
    """A record's `uuid`: a UUID5 of the run that sampled its instruction and its id there. Stable, so an export
    made again is identical; two runs' sets concatenated do not collide (ids restart at 0 in each run)."""
    return None if record_id is None else str(uuid.uuid5(_NAMESPACE, f"{run_key}:{record_id}"))


def context(chain: list[dict]) -> dict:
    """What the released columns need from the manifests of an export's lineage (nearest first): the instruction
    run's key and model, the judges of the tags, the turns of a multi-turn set, the preference sampling."""
    by_stage = {m.get("stage"): m for m in reversed(chain)}  # nearest manifest of each stage wins
    ins, tagged = by_stage.get("instructions") or {}, by_stage.get("tagged") or {}
    taggers = (tagged.get("config") or {}).get("taggers") or {}
    mt = (by_stage.get("multiturn") or {}).get("config") or {}
    samples = by_stage.get("preferences") or {}
    return {"run_key": ins.get("config_hash", ""), "model": ins.get("model"),
            "template": (ins.get("template") or {}).get("pre_query_template"),
            "generators": {tag: (taggers.get(tag) or {}).get("judge_model") for tag in GENERATED},
            "turns": int(mt.get("turns") or 1),
            "responder": samples.get("model"), "engine": samples.get("engine"),
            "sampling": samples.get("sampling") or {}}


def _turns(messages: list[dict]) -> tuple[list[dict], list[tuple[str | None, str | None]]]:
    """(ShareGPT turns, [(instruction, response) of each user turn, in order])."""
    conv = [{"from": _FROM.get(m["role"], m["role"]), "value": m["content"]} for m in messages]
    pairs = []
    for m in messages:
        if m["role"] == "user":
            pairs.append([m["content"], None])
        elif m["role"] == "assistant" and pairs and pairs[-1][1] is None:
            pairs[-1][1] = m["content"]
    return conv, [tuple(p) for p in pairs]


def _length(text) -> int | None:
    return len(text) if isinstance(text, str) else None  # characters, as the released cards define them


def sft_row(r: dict, messages: list[dict], ctx: dict) -> dict:
    """One of our records (with its TRL `messages`) in the released SFT layout (mt_schema when ctx turns > 1)."""
    gin = r.get("gen_input_configs") or {}
    model = gin.get("input_generator") or ctx["model"]
    conv, pairs = _turns(messages)
    instruction, response = pairs[0] if pairs else (r.get("instruction"), r.get("response"))
    key = "pre_query_template" if ctx["turns"] > 1 else "extract_input"
    row = {"uuid": uuid_of(ctx["run_key"], r.get("id")), "model": model,
           "gen_input_configs": {"temperature": gin.get("temperature"), "top_p": gin.get("top_p"),
                                 "input_generator": model, "seed": None,
                                 key: r.get("pre_query_template") or ctx["template"]},
           "instruction": instruction, "response": response, "conversations": conv,
           "instruction_length": _length(instruction), "response_length": _length(response),
           **{t: r.get(t) for t in ("task_category", "other_task_category", "difficulty", "intent", "knowledge",
                                    "input_quality", "quality_explanation", "llama_guard_2", "reward_model",
                                    "instruct_reward", "min_neighbor_distance", "repeat_count", "language")}}
    for tag, column in GENERATED.items():  # unitag.py: the judge's name where it gave the tag, else null
        row[column] = ctx["generators"][tag] if r.get(tag) is not None else None
    # gen_dis.py: null for an instruction without near-repeats, else the first of its cluster (maybe itself)
    row["min_similar_uuid"] = (uuid_of(ctx["run_key"], r.get("min_similar_conversation_id"))
                               if r.get("repeat_count") else None)
    for k in range(2, ctx["turns"] + 1):
        row[f"instruction_{k}"], row[f"response_{k}"] = pairs[k - 1] if k <= len(pairs) else (None, None)
    return row


def sft_table(rows: list[dict], turns: int) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SFT_SCHEMA if turns <= 1 else mt_schema(turns))


def pair_row(r: dict, ctx: dict) -> dict:
    """One usable pair of scored/ (an `ok` record) in the released DPO layout."""
    gin, s = r.get("gen_input_configs") or {}, ctx["sampling"]
    user = {"content": r["instruction"], "role": "user"}
    return {
        "uuid": uuid_of(ctx["run_key"], r.get("id")), "instruction": r["instruction"],
        "gen_input_configs": {"input_generator": gin.get("input_generator") or ctx["model"],
                              "temperature": gin.get("temperature"), "top_p": gin.get("top_p")},
        **{t: r.get(t) for t in ("intent", "knowledge", "difficulty", "input_quality", "quality_explanation",
                                 "task_category")},
        "input_length": _length(r["instruction"]), "responses": r["responses"],
        "gen_response_configs": {"engine": ctx["engine"], "max_tokens": s.get("max_tokens"),
                                 "output_generator": ctx["responder"], "prompt": None,
                                 "repetition_penalty": s.get("repetition_penalty"), "stop_tokens": s.get("stop"),
                                 "temperature": s.get("temperature"), "top_p": s.get("top_p")},
        # The scores keep their name whichever model gave them: the card names the scorer (a stand-in, offline).
        "rewards_armorm": [{"score": x} for x in r["scores"]],
        "chosen": [user, {"content": r["chosen"], "role": "assistant"}],
        "rejected": [user, {"content": r["rejected"], "role": "assistant"}]}


def pair_scores(table: pa.Table) -> tuple[list[float], list[float]]:
    """(chosen, rejected) scores of the pairs of a preference export in either layout: ours carries them, the
    released one has every response's score (chosen is the highest, rejected the lowest: synth.preferences.pair)."""
    if "score_chosen" in table.column_names:
        return table.column("score_chosen").to_pylist(), table.column("score_rejected").to_pylist()
    scores = [[x["score"] for x in row if x["score"] is not None] for row in table.column("rewards_armorm").to_pylist()]
    return [max(s) for s in scores], [min(s) for s in scores]
