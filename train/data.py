"""SFT datasets of the paper's Table 1, each converted from its own hub schema to TRL's `messages`.

    ds = load_sft_dataset("ultrachat")                          # the hub set (needs network)
    ds = load_sft_dataset("sharegpt", path="sg.json")            # a local copy in the hub schema
    ds = load_sft_dataset("runs/air-300k/export")                # a Magpie export dir of ours (data/*.parquet), in
                                                                 # either export_format (native `messages`, or magpie:
                                                                 # the released sets' `conversations`)
    python -m train.data                                         # lists the registered sets

Every loader returns a `datasets.Dataset` with two columns: `messages` (a list of
{"role": "system"|"user"|"assistant", "content": str}, what TRL's SFTTrainer takes as it is) and
`source` (the loader's name). A loader is a converter from one source record to a message list,
registered with the hub id and split the paper used (`@register_dataset`, as lm-eval registers its
backends). One validation runs after every converter: a conversation is kept only if it is
non-empty, has no empty turn, alternates user/assistant after an optional system turn and ends on
an assistant turn; drops are counted by reason and logged.

Tool-call and reasoning data of ours (the native export, its sharegpt.jsonl) keep what TRL's SFT reads besides
role/content (TRL docs, dataset formats, "Tool Calling"): an assistant turn's `tool_calls` ([{type: function,
function: {name, arguments}}], arguments an object; such a turn may have empty content) and `reasoning_content`,
`tool` turns (the results, with `name`/`tool_call_id` where the data has them, between the calling turn and the
assistant's next one), and a `tools` column (a list of tool schemas, or None) that SFTTrainer hands to the chat
template with each row. Such a set's `messages` are `datasets.Json` turns, so each turn holds its own keys and no
others (an Arrow struct would give every turn every key, as None, which templates that test `'tool_calls' in message`,
Llama-3.1's, read as a call). A set without them loads exactly as before.

The schema notes on each loader were checked against the dataset cards (their `dataset_info`
YAML) on huggingface.co in 2025; the cited page is in each comment.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets

from core.tools import _tool as tool_schema

log = logging.getLogger(__name__)

Message = dict  # role, content (str); in tool-call and reasoning data also the EXTRA_KEYS
Converter = Callable[[dict], list[Message]]

ROLES = ("system", "user", "assistant")
# ShareGPT `from` values seen in the wild. ShareGPT-Vicuna has "human"/"gpt" and, in some dumps,
# "bing"/"chatgpt"/"bard" for the assistant side and "system"; OpenHermes-2.5 has "system". Any
# other value (e.g. a tool/"function" turn) is not a chat turn we can train on: the record is
# dropped with reason "unknown_role" rather than guessed (our own sharegpt.jsonl's tool turns are read by
# from_sharegpt_with_calls).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}
_FEATURES = datasets.Features({"messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
                               "_drop": datasets.Value("string")})
# What a turn of our tool-call and reasoning data carries besides role/content (core/reasoning.message writes the
# assistant's; a tool turn's are TRL's and the OpenAI API's). Only our own loaders keep them.
EXTRA_KEYS = ("tool_calls", "reasoning_content", "name", "tool_call_id")
# LLaMA-Factory's ShareGPT turns for a call and its result, as synth/export.to_sharegpt writes them.
SHAREGPT_CALL, SHAREGPT_RESULT = "function_call", "observation"


class Drop(Exception):
    """Raised by a converter for a record it cannot convert; the message is the drop reason."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    hub_id: str | None          # None: no public copy, only `path=` works
    converter: Converter
    columns: tuple[tuple[str, ...], ...]   # accepted column sets (any one must be present)
    split: str = "train"        # the split (or slice) the paper trained on
    config: str | None = None
    hub_kwargs: dict = field(default_factory=dict)
    paper_size: str = ""        # the row count in paper Table 1
    notes: str = ""             # citation and what was verified
    kind: str = "sft"           # sft: `messages`; preference: `prompt`, `chosen`, `rejected` (DPO)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, hub_id: str | None, columns: tuple[str, ...] | tuple[tuple[str, ...], ...],
                     **kw) -> Callable[[Converter], Converter]:
    """Register `fn(record) -> messages` as the loader `name`."""
    cols = (columns,) if columns and isinstance(columns[0], str) else columns

    def wrap(fn: Converter) -> Converter:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = DatasetSpec(name=name, hub_id=hub_id, converter=fn, columns=tuple(cols),
                                      notes=kw.pop("notes", (fn.__doc__ or "").strip()), **kw)
        return fn
    return wrap


def dataset_names(kind: str = "sft") -> list[str]:
    return sorted(n for n, s in _REGISTRY.items() if s.kind == kind)


def get_spec(name: str, kind: str = "sft") -> DatasetSpec:
    if name not in _REGISTRY or _REGISTRY[name].kind != kind:
        close = difflib.get_close_matches(name, dataset_names(kind), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        what = "preference set" if kind == "preference" else "set"
        raise ValueError(f"dataset {name}: no such registered {what}; {hint}(`python -m train.data` lists them; "
                         "a local path works too: a Magpie export directory or a .json/.jsonl/.parquet file)")
    return _REGISTRY[name]


# -- shared converters --------------------------------------------------------------------------
def _turns(turns: list[dict] | None, role_key: str, content_key: str, roles: dict[str, str]) -> list[Message]:
    # Extra keys per turn (OpenHermes-2.5's `weight`, WildChat's `toxic`...) are dropped.
    if turns is None:
        raise Drop("malformed")
    out = []
    for turn in turns:
        role = roles.get(str(turn.get(role_key, "")).strip().lower())
        if role is None:
            raise Drop("unknown_role")
        out.append({"role": role, "content": turn.get(content_key)})
    return out


def from_sharegpt(conversations: list[dict] | None) -> list[Message]:
    return _turns(conversations, "from", "value", SHAREGPT_ROLES)


def from_messages(messages: list[dict] | None) -> list[Message]:
    return _turns(messages, "role", "content", {r: r for r in ROLES})


def tool_call(c: dict) -> dict:
    """One call in TRL's format, {"type": "function", "function": {"name", "arguments"}} (and its `id` if it has one),
    arguments an object: the JSON text the OpenAI API (and core.tools.Call.trl) writes is parsed, as templates that
    write `arguments | tojson` (Qwen2.5's, Llama-3.1's) would quote it a second time. Drop "bad_tool_call" otherwise."""
    fn = c.get("function") if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise Drop("bad_tool_call")
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise Drop("bad_tool_call") from None
    args = {} if args is None else args  # a call without arguments
    if not isinstance(args, dict):
        raise Drop("bad_tool_call")
    call = {"type": c.get("type") or "function", "function": {"name": fn["name"], "arguments": args}}
    return {"id": c["id"], **call} if c.get("id") is not None else call


def from_trl_messages(messages: list[dict] | None) -> list[Message]:
    """TRL's messages as our exports write them: role/content plus the EXTRA_KEYS a turn has, and `tool` turns."""
    if messages is None:
        raise Drop("malformed")
    out = []
    for turn in messages:
        role = str(turn.get("role", "")).strip().lower()
        if role not in (*ROLES, "tool"):
            raise Drop("unknown_role")
        m = {"role": role, "content": turn.get("content")}
        # None is a key this turn lacks: Parquet stores the turns as one struct with the keys of them all
        m.update((k, turn[k]) for k in EXTRA_KEYS if turn.get(k) is not None)
        if m.get("tool_calls"):
            if role != "assistant":
                raise Drop("bad_tool_call")
            m["tool_calls"] = [tool_call(c) for c in m["tool_calls"]]
            m["content"] = m["content"] or ""  # None where a turn only calls; templates concatenate content
        else:
            m.pop("tool_calls", None)  # [] is no call
        out.append(m)
    return out


def from_sharegpt_with_calls(conversations: list[dict] | None) -> list[Message]:
    """ShareGPT with LLaMA-Factory's tool turns, as our sharegpt.jsonl writes tool-call data (synth/export.to_sharegpt):
    a `function_call` turn (JSON of [{name, arguments}]) holds the calls of the answer before it (or of an answer
    with no text), an `observation` turn a tool's result."""
    if conversations is None:
        raise Drop("malformed")
    out: list[Message] = []
    for turn in conversations:
        kind = str(turn.get("from", "")).strip().lower()
        if kind == SHAREGPT_CALL:
            try:
                calls = json.loads(turn.get("value") or "")
            except json.JSONDecodeError:
                raise Drop("bad_tool_call") from None
            calls = [tool_call({"function": c}) for c in (calls if isinstance(calls, list) else [calls])]
            if out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
                out[-1]["tool_calls"] = calls
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif kind == SHAREGPT_RESULT:
            out.append({"role": "tool", "content": turn.get("value")})
        else:
            out.extend(from_sharegpt([turn]))
    return out


def _messages_or_conversations(r: dict) -> list[Message]:
    # Our native exports carry `messages` (synth/export.py); the Magpie-Align releases, and our exports with
    # export_format magpie, carry ShareGPT `conversations`. Prefer `messages` when a file has both (HuggingFaceTB's
    # H4 re-upload does). A ShareGPT file with a `tools` column is tool-call data (our sharegpt.jsonl).
    if r.get("messages") is not None:
        return from_trl_messages(r["messages"])
    if "tools" in r:
        return from_sharegpt_with_calls(r.get("conversations"))
    return from_sharegpt(r.get("conversations"))


def tools_of(value) -> list[dict] | None:
    """A record's `tools` as SFTTrainer passes them to the chat template: a list of tool schemas ({"type": "function",
    "function": {name, description, parameters}}, a bare function wrapped as core.tools does), from the list our
    export writes, JSON text (sharegpt.jsonl, an export by pyarrow < 19) or a list of JSON texts; None for none
    (TRL passes `tools or None`: Llama's templates write the tool preamble for an empty list)."""
    try:
        if isinstance(value, str):
            value = json.loads(value)
        items = [value] if isinstance(value, dict) else value or []
        if not isinstance(items, list):
            raise Drop("bad_tools")
        return [tool_schema(json.loads(t) if isinstance(t, str) else t, "tools") for t in items] or None
    except (json.JSONDecodeError, ValueError, AttributeError):
        raise Drop("bad_tools") from None


def validate(messages: list[Message]) -> str | None:
    """The drop reason for a conversation, or None if it is trainable. Tool-call data: an assistant turn that calls
    tools may have empty content, and is followed by the results (`tool` turns), then the assistant again, or ends
    the conversation (a Magpie tool-call record is the user's request and the calls that answer it)."""
    if not messages:
        return "empty"
    if any(not isinstance(m.get("content"), str) or not (m["content"].strip() or m.get("tool_calls"))
           for m in messages):
        return "empty_turn"
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not body:
        return "empty"
    expect = ("user",)
    for m in body:
        if m["role"] not in expect:
            return "not_alternating"
        if m["role"] == "user":
            expect = ("assistant",)
        elif m["role"] == "assistant":
            expect = ("tool",) if m.get("tool_calls") else ("user",)
        else:  # a tool's result: another result, or the assistant goes on
            expect = ("tool", "assistant")
    if body[-1]["role"] != "assistant":
        return "no_final_assistant"
    return None


# -- Magpie (ours and the released sets) --------------------------------------------------------
_MAGPIE_COLUMNS = (("conversations",), ("messages",))
_MAGPIE_NOTE = ("Xu et al. 2024, arXiv 2406.08464. Card `dataset_info`: `conversations` list of {from, value} "
                "(from human|gpt) plus tags; a local export dir of ours has `messages` instead.")


def _register_magpie(name: str, hub_id: str, split: str, size: str, verified: str) -> None:
    register_dataset(name, hub_id, _MAGPIE_COLUMNS, split=split, paper_size=size,
                     notes=f"{_MAGPIE_NOTE} {verified}")(_messages_or_conversations)


# "300K-Raw" is the first 300K rows of the raw sets (paper Sec. 4; PAPER_FACTS); no separate
# 300K-Raw repo exists. Verified: huggingface.co/datasets/Magpie-Align/Llama-3-Magpie-Air-3M-v0.1
# README (uuid, model, gen_input_config, input, output, conversations[{from,value}], tags; 3,000,000 rows).
_register_magpie("magpie-air-300k-raw", "Magpie-Align/Llama-3-Magpie-Air-3M-v0.1", "train[:300000]", "300K",
                 "Raw Air 3M set, first 300K rows (README of Llama-3-Magpie-Air-3M-v0.1).")
# Verified: collection Magpie-Align/magpie-pro-datasets lists Llama-3-Magpie-Pro-1M-v0.1 as "Raw data", 1M rows.
_register_magpie("magpie-pro-300k-raw", "Magpie-Align/Llama-3-Magpie-Pro-1M-v0.1", "train[:300000]", "300K",
                 "Raw Pro 1M set, first 300K rows (Magpie-Align pro collection).")
# Verified: Magpie-Align/Magpie-Air-300K-Filtered tree: data/train-0000{0,1}-of-00002.parquet, split train.
_register_magpie("magpie-air-300k-filtered", "Magpie-Align/Magpie-Air-300K-Filtered", "train", "300K",
                 "Air 300K-Filtered (repo tree data/train-*.parquet).")
# Verified: Magpie-Pro-300K-Filtered README@523df96: features conversations[{from,value}], uuid; 300,000 rows.
_register_magpie("magpie-pro-300k-filtered", "Magpie-Align/Magpie-Pro-300K-Filtered", "train", "300K",
                 "Pro 300K-Filtered (README@523df96: conversations, uuid; 300,000 rows).")
# Verified: Magpie-Pro-MT-300K-v0.1 README@dffd97d: model, gen_input_config, input1, output1, input2,
# output2, conversations, uuid; 300,000 rows. Air-MT ships the same layout (repo tree: 8 train shards).
_register_magpie("magpie-air-mt", "Magpie-Align/Magpie-Air-MT-300K-v0.1", "train", "300K",
                 "Air-MT 2-turn set (layout as Pro-MT).")
_register_magpie("magpie-pro-mt", "Magpie-Align/Magpie-Pro-MT-300K-v0.1", "train", "300K",
                 "Pro-MT 2-turn set (README@dffd97d: input1/output1/input2/output2, conversations).")

# A local file or directory already in TRL's format (or ShareGPT): what a plain path resolves to.
register_dataset("messages", None, _MAGPIE_COLUMNS,
                 notes="Local data already in TRL's `messages` schema (e.g. a Magpie export dir of ours, "
                       "data/*.parquet) or ShareGPT `conversations`.")(_messages_or_conversations)


# -- the baselines of Table 1 -------------------------------------------------------------------
@register_dataset("self-instruct-llama3", "Magpie-Align/Llama-3-8B-Self-Instruct-100K", ("conversations",),
                  paper_size="100K")
def self_instruct_llama3(r: dict) -> list[Message]:
    """The paper's Self-Instruct (Llama-3) baseline, released by the Magpie authors. Verified: README of
    Magpie-Align/Llama-3-8B-Self-Instruct-100K: conversation_id, instruction, response,
    conversations[{from,value}]; 100,098 rows; made with github.com/ArmelRandy/Self-instruct and
    Llama-3-8B-Instruct."""
    return from_sharegpt(r["conversations"])


@register_dataset("sharegpt", "flydust/ShareGPT-Vicuna-unfiltered-axolotl", ("conversations",), paper_size="112K")
def sharegpt(r: dict) -> list[Message]:
    """ShareGPT 112K: anon8231489123/ShareGPT_Vicuna_unfiltered (ShareGPT_V3_unfiltered_cleaned_split.json,
    a JSON list of {id, conversations[{from,value}]}) as converted for axolotl by a Magpie author
    (flydust). Verified: README of flydust/ShareGPT-Vicuna-unfiltered-axolotl: dataset, id,
    conversations[{from,value}]; 111,912 rows (= the paper's 112K). Either file loads with `path=`.
    Roles: human->user; gpt/chatgpt/bing/bard->assistant; system->system; others drop the record.
    A leading assistant turn (a conversation split mid-way) is removed, as FastChat's trainer does."""
    msgs = from_sharegpt(r["conversations"])
    while msgs and msgs[0]["role"] == "assistant":
        msgs = msgs[1:]
    return msgs


@register_dataset("evol-instruct", "WizardLMTeam/WizardLM_evol_instruct_V2_196k", ("conversations",),
                  paper_size="143K")
def evol_instruct(r: dict) -> list[Message]:
    """Evol-Instruct (WizardLM V2). Verified: the repo holds one file, WizardLM_evol_instruct_V2_143k.json
    (the 196K mix minus its ShareGPT part; paper Table 1 says 143K); schema from the re-upload card
    ai2-adapt-dev/wizardlm-backup: idx, conversations[{from,value}]; 143,000 rows."""
    return from_sharegpt(r["conversations"])


@register_dataset("openhermes-1", "teknium/openhermes", ("instruction", "output"), paper_size="243K")
def openhermes_1(r: dict) -> list[Message]:
    """OpenHermes 1. Alpaca schema: instruction, input, output (the original card has no dataset_info;
    verified on the derivative card umarigan/openhermes_tr: instruction, input, output, 241,853 rows,
    and teknium/openhermes README: 242,000 GPT-4 entries). A non-empty `input` follows the
    instruction after a blank line, as Alpaca's prompt does."""
    extra = (r.get("input") or "").strip()
    user = r["instruction"] if not extra else f"{r['instruction']}\n\n{extra}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]


@register_dataset("tulu-v2-mix", "allenai/tulu-v2-sft-mixture", ("messages",), paper_size="326K")
def tulu_v2_mix(r: dict) -> list[Message]:
    """Tulu V2 SFT mixture. Verified: README@9a0e786: dataset, id, messages[{role, content}];
    326,154 rows."""
    return from_messages(r["messages"])


@register_dataset("wildchat", "allenai/WildChat", ("conversation",), paper_size="652K")
def wildchat(r: dict) -> list[Message]:
    """WildChat (the 652K first release; WildChat-1M is a later, larger set). Verified: README@1a5a898:
    conversation_id, model, timestamp, conversation[{content, language, redacted, role, toxic}],
    turn, language, openai_moderation, detoxify_moderation, toxic, redacted. Per-turn extras are
    dropped; toxic conversations are kept as the paper does not say it filtered them."""
    return from_messages(r["conversation"])


@register_dataset("openhermes-2.5", "teknium/OpenHermes-2.5", ("conversations",), paper_size="1M")
def openhermes_2_5(r: dict) -> list[Message]:
    """OpenHermes 2.5 (openhermes2_5.json, a JSON list). Verified via the datasets builder info of the
    mirror ByteResearch/OpenHermes-2.5-Filtered-240405 (download hf://datasets/teknium/OpenHermes-2.5):
    conversations[{from, value, weight}], category, topic, title, source, model, language...; 1,001,551
    rows. `from` is system/human/gpt. `weight` (null or a float) is ignored: our trainer already trains
    on every assistant turn and no other."""
    return from_sharegpt(r["conversations"])


# GenQA ships no `train` split: one split per generator prompt family. Verified: README@c1bae32 lists
# code, dialog, general, math, mmlu, multiple_choice, writing; the viewer adds academic and task
# (11.1M rows in all). The paper's 6.47M predates some of these, so which subset it used is not known.
GENQA_SPLITS = ("code", "dialog", "general", "math", "mmlu", "multiple_choice", "writing", "academic", "task")


@register_dataset("genqa", "tomg-group-umd/GenQA", ("text",), split="+".join(GENQA_SPLITS), paper_size="6.47M")
def genqa(r: dict) -> list[Message]:
    """GenQA (Chen et al. 2024, arXiv 2406.10323). Verified: README@c1bae32: text[{content, role}], prompt,
    template, idx, category. The conversation is in `text`, not `messages`."""
    return from_messages(r["text"])


@register_dataset("ultrachat", "HuggingFaceH4/ultrachat_200k", ("messages",), split="train_sft",
                  paper_size="208K")
def ultrachat(r: dict) -> list[Message]:
    """UltraChat 200K (the Zephyr filtering). Verified: README@ca063fb: prompt, prompt_id,
    messages[{content, role}]; viewer splits train_sft 208k, test_sft, train_gen, test_gen."""
    return from_messages(r["messages"])


# -- loading ------------------------------------------------------------------------------------
def _check_schema(raw: datasets.Dataset, spec: DatasetSpec, where: str) -> None:
    found = set(raw.column_names)
    if not any(set(cols) <= found for cols in spec.columns):
        expected = " or ".join("[" + ", ".join(c) + "]" for c in spec.columns)
        raise ValueError(f"{where or spec.name}: wrong schema for {spec.name!r}: found columns {sorted(found)}, "
                         f"expected {expected}. Pass the loader whose schema this file has "
                         f"(one of {', '.join(dataset_names(spec.kind))}).")


def _has_extras(feature) -> bool:
    """Whether a `messages` column of this type can hold the EXTRA_KEYS: a struct with one of them, or JSON turns
    (datasets' JSON reader types turns with differing keys so)."""
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return _has_extras(feature.feature)
    if isinstance(feature, list):
        return _has_extras(feature[0])
    return isinstance(feature, datasets.Json) or isinstance(feature, dict) and any(k in feature for k in EXTRA_KEYS)


def _features(with_tools: bool) -> datasets.Features:
    """The columns of tool-call or reasoning data: JSON turns (each with its own keys) and, with tools, `tools`."""
    tools = {"tools": datasets.List(datasets.Json())} if with_tools else {}
    return datasets.Features({"messages": datasets.List(datasets.Json()), **tools})


def to_messages(raw: datasets.Dataset, name: str, where: str = "") -> tuple[datasets.Dataset, Counter]:
    """Convert a raw dataset with loader `name`'s converter; return (messages [+ tools] + source, drops by reason)."""
    spec = get_spec(name)
    _check_schema(raw, spec, where)
    # Only our own layouts carry tool calls and reasoning; the third-party converters keep role/content.
    with_tools = spec.converter is _messages_or_conversations and "tools" in raw.column_names
    rich = with_tools or spec.converter is _messages_or_conversations and _has_extras(raw.features.get("messages"))
    features = datasets.Features({**_features(with_tools), "_drop": datasets.Value("string")}) if rich else _FEATURES

    def convert(r: dict) -> dict:
        out = {"messages": [], "tools": None} if with_tools else {"messages": []}
        try:
            msgs = spec.converter(r)
            if with_tools:
                out["tools"] = tools_of(r["tools"])
        except Drop as e:
            return {**out, "_drop": str(e)}
        except (KeyError, TypeError, AttributeError):
            return {**out, "_drop": "malformed"}
        return {**out, "messages": msgs, "_drop": validate(msgs) or ""}

    out = raw.map(convert, remove_columns=raw.column_names, features=features,
                  desc=f"{name}: to messages", load_from_cache_file=False)
    drops = Counter(d for d in out["_drop"] if d)
    if drops:
        out = out.filter(lambda d: not d, input_columns="_drop", load_from_cache_file=False)
    out = out.remove_columns("_drop").add_column("source", [name] * len(out))
    return out, drops


def _concat(parts: list[datasets.Dataset]) -> datasets.Dataset:
    """The parts of a local set as one. The shards of one export can differ (one without any call or reasoning has
    plain turns): then every part takes the tool-call columns, a part without tools having none (None)."""
    if all(p.features == parts[0].features for p in parts):
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    with_tools = any("tools" in p.column_names for p in parts)
    features = datasets.Features({**_features(with_tools), "source": datasets.Value("string")})
    parts = [(p.add_column("tools", [None] * len(p)) if with_tools and "tools" not in p.column_names else p)
             .select_columns(list(features)).cast(features) for p in parts]
    return datasets.concatenate_datasets(parts)


DATA_SUFFIXES = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}


def local_files(path: str | Path, what: str = "dataset") -> list[Path]:
    """The data files of a local dataset (a file, or a folder with data/*.parquet or *.parquet/*.jsonl/*.json);
    errors name `what` and the path."""
    given, path = path, Path(path).expanduser()  # errors show the path as the user wrote it
    if path.is_file():
        if path.suffix not in DATA_SUFFIXES:
            raise ValueError(f"{what} {given}: unsupported file type {path.suffix!r}; use .parquet, .json or .jsonl")
        return [path]
    if path.is_dir():
        for d in (path / "data", path):
            files = sorted(f for ext in ("*.parquet", "*.jsonl", "*.json") for f in d.glob(ext))
            if files:
                return files
        raise FileNotFoundError(f"{what} {given}: a directory without data/*.parquet or *.parquet/*.jsonl/*.json "
                                "files; give a Magpie export directory or one of those files")
    raise FileNotFoundError(f"{what} {given}: no such directory or file; give a Magpie export directory or a "
                            ".json/.jsonl/.parquet file")


def find_source(name_or_path: str, path: str | None = None, kind: str = "sft") -> tuple[DatasetSpec, list[Path] | None]:
    """The loader and, for local data, the files a dataset reference names (see `load_sft_dataset`).
    Reads no data, so a caller can check its inputs before loading a model; errors say what to pass."""
    if name_or_path in _REGISTRY and _REGISTRY[name_or_path].kind == kind:
        spec = _REGISTRY[name_or_path]
        if path is not None:
            return spec, local_files(path, what=f"local copy of {spec.name!r}")
        if spec.hub_id is None:
            raise ValueError(f"{spec.name!r} has no hub copy; pass path= to a local file or directory")
        return spec, None
    # Registered names are bare words ("sharegpt", "openhermes-2.5"): a separator, a leading "." or "~",
    # or a data-file suffix means the user meant a file on this machine (local_files says if it is missing).
    ref = name_or_path
    if (Path(ref).expanduser().exists() or any(sep in ref for sep in ("/", os.sep)) or ref.startswith((".", "~"))
            or Path(ref).suffix in DATA_SUFFIXES):
        return _REGISTRY[LOCAL[kind]], local_files(ref)
    return get_spec(ref, kind), None  # raises, with the close names


def load_sft_dataset(name_or_path: str, path: str | None = None, split: str | None = None,
                     max_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
    """A Table-1 SFT dataset in TRL's conversational format (`messages`, `source`); see the module docstring.
    `split` None is the one the paper trained on (ignored for local files); `max_samples` is a seeded
    subset taken after validation."""
    return _load(name_or_path, path, split, max_samples, seed, "sft", to_messages)


def _load(name_or_path, path, split, max_samples, seed, kind: str, convert) -> datasets.Dataset:
    """Read a registered or local set of `kind`, convert it with `convert(raw, name, where)` and take the subset."""
    spec, files = find_source(name_or_path, path, kind)
    name = spec.name
    drops: Counter = Counter()
    if files is not None:
        parts = []
        for f in files:
            raw = datasets.load_dataset(DATA_SUFFIXES[f.suffix], data_files=str(f), split="train")
            part, d = convert(raw, name, where=str(f))
            parts.append(part)
            drops += d
        ds = _concat(parts)
        origin = str(path or name_or_path)
    else:
        raw = datasets.load_dataset(spec.hub_id, spec.config, split=split or spec.split, **spec.hub_kwargs)
        ds, drops = convert(raw, name, where=spec.hub_id)
        origin = f"{spec.hub_id} [{split or spec.split}]"

    total = len(ds) + sum(drops.values())
    detail = ", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none"
    what = "preference pairs" if kind == "preference" else "conversations"
    log.info("%s: kept %d of %d %s from %s (dropped: %s)", name, len(ds), total, what, origin, detail)
    load_dataset_drops[name] = dict(drops)
    if max_samples is not None and max_samples < len(ds):
        ds = ds.shuffle(seed=seed).select(range(max_samples)).flatten_indices()
    return ds


load_dataset_drops: dict[str, dict] = {}  # the drops of the last load of each set, by reason (for summaries)


# -- preference sets (DPO) ----------------------------------------------------------------------
_TURNS = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
_PREF_FEATURES = datasets.Features({"prompt": _TURNS, "chosen": _TURNS, "rejected": _TURNS,
                                    "_drop": datasets.Value("string")})


def _completion(value) -> list[Message]:
    return [{"role": "assistant", "content": value}] if isinstance(value, str) else from_messages(value)


def preference_pair(r: dict) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, chosen, rejected) from either layout of a preference record: an explicit `prompt` (messages, or a
    string for one user turn) with chosen/rejected completions (TRL's format, our export), or chosen/rejected as
    whole conversations that share every turn but the last (UltraFeedback-binarized, the Magpie DPO releases:
    the implicit prompt)."""
    chosen, rejected = _completion(r["chosen"]), _completion(r["rejected"])
    if len(chosen) > 1 or len(rejected) > 1:  # whole conversations: the prompt is what they share
        prompt = chosen[:-1]
        if rejected[:-1] != prompt:
            raise Drop("prompt_mismatch")
        chosen, rejected = chosen[-1:], rejected[-1:]
    else:
        p = r.get("prompt")
        prompt = [{"role": "user", "content": p}] if isinstance(p, str) else from_messages(p)
    return prompt, chosen, rejected


def validate_pair(prompt: list[Message], chosen: list[Message], rejected: list[Message]) -> str | None:
    """The drop reason for a preference pair, or None if DPO can train on it."""
    if len(chosen) != 1 or len(rejected) != 1:
        return "not_one_completion"
    reason = validate(prompt + chosen) or validate(prompt + rejected)
    if reason:
        return reason
    if chosen[0]["content"].strip() == rejected[0]["content"].strip():
        return "tie"
    return None


def to_preferences(raw: datasets.Dataset, name: str, where: str = "") -> tuple[datasets.Dataset, Counter]:
    """Convert a raw preference set; return (prompt, chosen, rejected + source, drops by reason)."""
    spec = get_spec(name, "preference")
    _check_schema(raw, spec, where)

    def convert(r: dict) -> dict:
        empty = {"prompt": [], "chosen": [], "rejected": []}
        try:
            prompt, chosen, rejected = spec.converter(r)
        except Drop as e:
            return {**empty, "_drop": str(e)}
        except (KeyError, TypeError, AttributeError):
            return {**empty, "_drop": "malformed"}
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
                "_drop": validate_pair(prompt, chosen, rejected) or ""}

    out = raw.map(convert, remove_columns=raw.column_names, features=_PREF_FEATURES,
                  desc=f"{name}: to preference pairs", load_from_cache_file=False)
    drops = Counter(d for d in out["_drop"] if d)
    if drops:
        out = out.filter(lambda d: not d, input_columns="_drop", load_from_cache_file=False)
    return out.remove_columns("_drop").add_column("source", [name] * len(out)), drops


def load_preference_dataset(name_or_path: str, path: str | None = None, split: str | None = None,
                            max_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
    """A preference set in TRL's conversational format (`prompt`, `chosen`, `rejected` as messages, `source`): a
    registered one (`python -m train.data`) or a local file/folder, such as `runs/<recipe>/preferences/export`."""
    return _load(name_or_path, path, split, max_samples, seed, "preference", to_preferences)


_PAIR_COLUMNS = (("chosen", "rejected"),)
register_dataset("preferences", None, _PAIR_COLUMNS, kind="preference",
                 notes="Local preference data: TRL's format (prompt + chosen/rejected completions; our "
                       "preferences/export) or whole chosen/rejected conversations (the released Magpie DPO sets, "
                       "our export with export_format magpie).")(preference_pair)
# Schema of Magpie-Pro-DPO-100K-v0.1 (its card's dataset_info, read on a mirror of its README, and the same in the
# translation youjunhyeok/Magpie-Pro-DPO-100K-v0.1-ko): uuid, instruction, gen_input_configs, the tags, input_length,
# responses, gen_response_configs, rewards_armorm [{score}], chosen and rejected as [{content, role}] user + assistant
# conversations; 98,000 train + 2,000 test rows. Our preference export with export_format magpie writes it
# (synth/released.py). The Air release is assumed to share it (its card was not readable here); the MagpieLM-DPO card
# says both were made with 5 samples at T=0.8 scored by ArmoRM, chosen the best and rejected the worst.
register_dataset("magpie-air-dpo", "Magpie-Align/Magpie-Air-DPO-100K-v0.1", _PAIR_COLUMNS, kind="preference",
                 paper_size="100K", notes="Magpie-Air-DPO-100K-v0.1: chosen/rejected conversations (user + "
                 "assistant), 5 responses per instruction scored by ArmoRM.")(preference_pair)
register_dataset("magpie-pro-dpo", "Magpie-Align/Magpie-Pro-DPO-100K-v0.1", _PAIR_COLUMNS, kind="preference",
                 paper_size="100K", notes="Magpie-Pro-DPO-100K-v0.1: same layout as the Air set.")(preference_pair)
# The paper's "UltraChat + DPO UltraFeedback" baseline (Table 1; the SimPO release's Llama-3-Base SFT/DPO models).
register_dataset("ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", _PAIR_COLUMNS, kind="preference",
                 split="train_prefs", paper_size="64K", notes="UltraFeedback binarized (Zephyr): prompt, chosen and "
                 "rejected conversations, score_chosen/score_rejected; split train_prefs (61K of the 64K "
                 "prompts).")(preference_pair)
register_dataset("ultrafeedback-armorm", "princeton-nlp/llama3-ultrafeedback-armorm", _PAIR_COLUMNS,
                 kind="preference", paper_size="64K", notes="The SimPO release: UltraFeedback prompts, Llama-3-8B-"
                 "Instruct responses scored by ArmoRM, chosen/rejected conversations.")(preference_pair)
LOCAL = {"sft": "messages", "preference": "preferences"}  # the loader a local path gets


if __name__ == "__main__":
    # `python -m train.data`: the registered sets, where the error for an unknown name points.
    for kind in ("sft", "preference"):
        print(f"# {kind} sets ({'train.sft' if kind == 'sft' else 'train.dpo'} --dataset NAME)")
        for n in dataset_names(kind):
            s = _REGISTRY[n]
            where = f"{s.hub_id} [{s.split}]" if s.hub_id else "local files only (a path)"
            print(f"{n:26} {s.paper_size or '-':>6}  {where}")
