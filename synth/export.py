"""Export a dataset directory as a release: TRL-ready Parquet, ShareGPT JSONL and a dataset card.

    out_dir/data/part-0000k.parquet             `messages` plus the reference release's fields (export_format
                                                native), or the released Magpie sets' columns (magpie)
    out_dir/sharegpt.jsonl                      {"id", "conversations": [{"from", "value"}], tags...}
    out_dir/README.md                           the card: source, template, sampling, filters, counts,
                                                tag distributions, what stood in for the paper's models, and
                                                the generator's licence and the data's, separately

`datasets.load_dataset("parquet", data_dir=out_dir + "/data")` opens it; TRL's SFTTrainer takes the native
`messages` column as it is, and train.data reads either layout. Nothing is uploaded unless `push_to_hub` names a
repo.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pyarrow as pa
from huggingface_hub import DatasetCard, DatasetCardData

from core import store
from core.schema import CATEGORICAL, COLUMNS, TAGS

from . import released
from .stats import UNTAGGED, Profile

FORMATS = ("native", "magpie")  # native: TRL `messages` + our columns; magpie: the released sets' (released.py)
SHARD_ROWS = 50_000
_BATCH_ROWS = 10_000  # rows made into dicts at a time (ShareGPT lines, `messages`): ~50 MB of text; divides SHARD_ROWS
_SHAREGPT_ROLE = {"user": "human", "assistant": "gpt", "system": "system"}

# The generator's licence governs its outputs (the Magpie-Align cards say "Please follow" the generator's licence,
# and tag the set with it). (substring of the lower-cased model name, Hub licence id, name), the first match wins,
# so a size with its own terms comes before its family. Source: the `license` field of each family's model cards
# on huggingface.co (meta-llama/*, Qwen/*, google/gemma-*, microsoft/Phi-*, mistralai/*, HuggingFaceTB/SmolLM2-*).
MODEL_LICENSES = [
    ("llama-3.3", "llama3.3", "Llama 3.3 Community License"),
    ("llama-3.2", "llama3.2", "Llama 3.2 Community License"),
    ("llama-3.1", "llama3.1", "Llama 3.1 Community License"),
    ("llama-3", "llama3", "Meta Llama 3 Community License"),
    ("llama3", "llama3", "Meta Llama 3 Community License"),
    ("llama-2", "llama2", "Llama 2 Community License"),
    ("qwen2-72b", "other", "Tongyi Qianwen License Agreement"),
    ("qwen2.5-72b", "other", "Qwen License Agreement"),
    ("qwen2.5-3b", "other", "Qwen Research License Agreement"),
    ("qwen2", "apache-2.0", "Apache-2.0 (Qwen2 / Qwen2.5 sizes other than 72B and 2.5-3B)"),
    ("qwen3", "apache-2.0", "Apache-2.0 (Qwen3)"),
    ("gemma", "gemma", "Gemma Terms of Use"),
    ("phi-3", "mit", "MIT (Phi-3)"),
    ("phi-4", "mit", "MIT (Phi-4)"),
    ("mistral-7b", "apache-2.0", "Apache-2.0 (Mistral-7B)"),
    ("mixtral-8x", "apache-2.0", "Apache-2.0 (Mixtral)"),
    ("smollm", "apache-2.0", "Apache-2.0 (SmolLM2)"),
]
# The data licence the Magpie authors give their released sets: "Data License: CC BY-NC 4.0" (the badge of
# github.com/magpie-align/magpie's README); the cards themselves only name the generator's (issue #47 there asks).
DATA_LICENSE = ("cc-by-nc-4.0", "CC BY-NC 4.0")


def license_for(model: str | None) -> tuple[str, str]:
    """(Hub licence id, name) of a generator model from MODEL_LICENSES; ("other", ...) when it is not there."""
    name = (model or "").lower()
    for key, lic, title in MODEL_LICENSES:
        if key in name:
            return lic, title
    return "other", f"unknown: set model_license (the licence of {model or 'the generator model'}, on its model card)"


def _license(value: str) -> tuple[str, str]:
    """A licence given in the config: a Hub id ("llama3.1", "apache-2.0") is its own name; free text is "other"."""
    value = value.strip()
    return (value.lower(), value) if value and " " not in value else ("other", value)


def licenses(model: str | None, model_license: str | None = None, data_license: str | None = None) -> dict:
    """The two licences a card states, separately: the generator's (its outputs follow its terms: `model_license`
    or MODEL_LICENSES) and the data's (`data_license`, default DATA_LICENSE), each with where it came from; `ids`
    is the card's `license:` list."""
    if model_license:
        m, m_src = _license(model_license), "config model_license"
    else:
        m = license_for(model)
        m_src = "the table of known model families (synth/export.py)" if m[0] != "other" else "not known"
    d, d_src = ((_license(data_license), "config data_license") if data_license else
                (DATA_LICENSE, "the data licence of the Magpie-Align releases (default; set data_license)"))
    return {"model": {"id": m[0], "name": m[1], "source": m_src}, "data": {"id": d[0], "name": d[1], "source": d_src},
            "ids": list(dict.fromkeys((m[0], d[0])))}

_EXTRA_KEYS = ("reasoning_content", "tool_calls")  # of a message, where the run wrote them (keep_reasoning, tools)


def _messages(r: dict) -> list[dict]:
    if r.get("messages"):
        return [{"role": m["role"], "content": m["content"], **{k: m[k] for k in _EXTRA_KEYS if m.get(k)}}
                for m in r["messages"]]
    return [{"role": "user", "content": r.get("instruction") or ""},
            {"role": "assistant", "content": r.get("response") or ""}]


def to_sharegpt(r: dict) -> dict:
    """A ShareGPT line. Tool-call data as LLaMA-Factory's ShareGPT reads it: an answer's calls are a `function_call`
    turn (their JSON: [{name, arguments}]) and the offered tools a `tools` JSON string."""
    conv = []
    for m in _messages(r):
        if m.get("content") or not m.get("tool_calls"):
            conv.append({"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]})
        if m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                     for c in m["tool_calls"]]
            conv.append({"from": "function_call", "value": json.dumps(calls, ensure_ascii=False)})
    tools = {"tools": r["tools"]} if r.get("tools") else {}
    return {"id": r.get("id"), "conversations": conv, **tools, **{t: r.get(t) for t in TAGS if t in r}}


def _retype(t: pa.DataType, path: tuple[str, ...]) -> pa.DataType:
    """`t` with the field at `path` (struct field names; list items are passed through) typed JSON."""
    if not path:
        return pa.json_()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_retype(t.value_type, path))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _retype(f.type, path[1:]) if f.name == path[0] else f.type) for f in t])
    return t


def with_json(table: pa.Table) -> pa.Table:
    """Tool-call data as TRL's SFT takes it (docs: dataset formats, "Tool Calling"): `tools` a list of tool objects and
    each call's `arguments` an object. Their keys differ from tool to tool, which no Parquet struct can hold, so they
    are Arrow's JSON type: `datasets.load_dataset("parquet")` reads them as objects (its Json feature)."""
    if not hasattr(pa, "json_"):  # pyarrow < 19: JSON text, which TRL's SFT parses for `tools` too
        return table
    if "tools" in table.column_names and pa.types.is_string(table.schema.field("tools").type):
        lists = [None if t is None else [json.dumps(x, ensure_ascii=False) for x in json.loads(t)]
                 for t in table["tools"].to_pylist()]
        table = table.set_column(table.column_names.index("tools"), "tools",
                                 pa.array(lists, pa.list_(pa.string())).cast(pa.list_(pa.json_())))
    for name, path in (("messages", ("tool_calls", "function", "arguments")), ("tool_calls", ("function", "arguments"))):
        if name in table.column_names:
            i, t = table.column_names.index(name), table.schema.field(name).type
            table = table.set_column(i, name, table[name].cast(_retype(t, path)))
    return table


def _find_key(obj, key: str, where: str = "") -> list[tuple[str, object]]:
    """Every `key` anywhere in a nested manifest, with the dotted path of its parent."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and v:
                out.append((where, v))
            else:
                out.extend(_find_key(v, key, f"{where}.{k}" if where else k))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_find_key(v, key, where))
    return out


def _stand_ins(chain: list[dict], card_info: dict) -> list[str]:
    notes: list[str] = []
    given = card_info.get("stand_in")
    if isinstance(given, str):
        notes.append(given)
    elif isinstance(given, dict):
        notes.extend(f"{k}: {v}" for k, v in given.items())
    elif given:
        notes.extend(str(v) for v in given)
    for m in chain:
        for where, v in _find_key(m, "stand_in"):
            label = where.split(".")[-1] if where else m.get("stage", "")
            line = f"{label}: {v}" if label else str(v)
            if line not in notes and str(v) not in notes:
                notes.append(line)
    return notes


# -- the card: values here, prose and tables in dataset_card.md ----------------------------------
_CARD = Path(__file__).with_name("dataset_card.md")
# The Hub's size buckets are decades from 1K (datasets/utils/resources/size_categories.json lists them), so a
# row count's digits past the third pick one; neither datasets nor huggingface_hub maps a count to its bucket.
_SIZES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M")
# card row -> the Profile's value of it (stats.NUMERIC, stats.LENGTHS)
_NUMERIC = {**{f: f for f in ("instruct_reward", "reward_difference", "min_neighbor_distance", "repeat_count")},
            "instruction_chars": "instruction_length", "response_chars": "response_length"}


class CardCounts:
    """What the card says about the rows, gathered a batch at a time: their Profile (tag distributions, numeric
    summaries, turns), the first row (its configs and template) and the instruction sampling cells."""

    def __init__(self):
        self.profile, self.first, self.cells = Profile(), None, Counter()

    def add(self, table: pa.Table, records: list[dict]) -> None:
        self.profile.add(table)
        if self.first is None and records:
            self.first = records[0]
        self.cells.update(((r.get("gen_input_configs") or {}).get("temperature"),
                           (r.get("gen_input_configs") or {}).get("top_p")) for r in records)


def summary_row(v: list[float]) -> list[float]:
    """[min, p25, median, p75, max, mean] of `v`, the cards' numeric row; empty for no values."""
    if not v:
        return []
    q = statistics.quantiles(v, n=4) if len(v) > 1 else v * 3
    return [min(v), *q, max(v), statistics.fmean(v)]


def _summary(profile: Profile, field: str) -> tuple[int, int, list[float]]:
    """(tagged, untagged, [min, p25, median, p75, max, mean]); the list is empty when nothing is tagged."""
    v = profile.values(field).tolist()  # floats: 32 bytes a row, not a record
    return len(v), profile.missing(field), summary_row(v)


def render_card(name: str, counts: CardCounts, chain: list[dict], card_info: dict, export_format: str = "native",
                model_license: str | None = None, data_license: str | None = None) -> str:
    profile, first = counts.profile, counts.first or {}
    n = profile.rows
    gin, gres = first.get("gen_input_configs") or {}, first.get("gen_response_configs") or {}
    by_stage = {m.get("stage"): m for m in reversed(chain)}  # nearest manifest of each stage wins
    ins = by_stage.get("instructions") or {}
    model = card_info.get("source_model") or gin.get("input_generator") or ins.get("model") or "unknown"
    lic = licenses(model, model_license or card_info.get("license"), data_license)
    front = DatasetCardData(
        license=lic["ids"], language=sorted({k.lower() for k, c in profile.counts["language"].items()
                                      if k and k != UNTAGGED and c}) or None,
        task_categories=["text-generation"], size_categories=[_SIZES[min(max(len(str(n)) - 3, 0), len(_SIZES) - 1)]],
        tags=["synthetic", "magpie", "instruction-tuning"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/part-*.parquet"}]}])
    sampling = {k: v for k, v in gres.items() if k in ("temperature", "top_p", "max_tokens", "repetition_penalty")}
    card = DatasetCard.from_template(
        front, template_path=str(_CARD), name=name, info=card_info, n=n, model=model,
        response_model=gres.get("output_generator") or (by_stage.get("responses") or {}).get("model") or model,
        engine=gin.get("engine") or ins.get("engine", ""), licenses=lic, export_format=export_format,
        pre_query_template=card_info.get("pre_query_template") or first.get("pre_query_template")
        or (ins.get("template") or {}).get("pre_query_template"),
        stand_ins=_stand_ins(chain, card_info), cells=sorted(counts.cells.items(), key=str),
        turns=sorted(profile.turns.items()),
        response_sampling=json.dumps(sampling) if gres else None,
        filter_info=card_info.get("filter") or by_stage.get("filter") or {},
        dists={f: profile.category_counts(f, order) for f, order in CATEGORICAL.items()},
        numeric={f: _summary(profile, get) for f, get in _NUMERIC.items()}
        | ({"reasoning_chars": _summary(profile, "reasoning_length")} if len(profile.values("reasoning_length")) else {}))
    return str(card)


# -- the stage --------------------------------------------------------------------------------
def export(in_dir, out_dir, name: str, card_info: dict | None = None, push_to_hub: str | None = None,
           export_format: str = "native", model_license: str | None = None, data_license: str | None = None) -> dict:
    """Write the release of `in_dir` (a complete dataset directory) as a dataset directory of its own:
    `data/part-*.parquet`, `sharegpt.jsonl` and the card `README.md`, each written whole or not at all; resumable
    and keyed by its input like every stage. `export_format` native: TRL's `messages` first, then the reference's
    fields; magpie: the columns and types of the released Magpie-Align sets (synth/released.py). The licences are
    the card's (`licenses`)."""
    if export_format not in FORMATS:
        raise ValueError(f"export_format must be one of {', '.join(FORMATS)}, got {export_format!r}")
    card_info = dict(card_info or {})
    src = store.DatasetDir(in_dir)
    out = store.DatasetDir(out_dir)
    # The new keys are None at their defaults: an export made before they existed is still this config.
    config = {"name": name, "card_info": card_info, "input_id": src.identity(), "model_license": model_license,
              "data_license": data_license, "format": None if export_format == "native" else export_format}
    m = out.begin("export", config, input=str(in_dir))
    if m["status"] != "complete":
        if not src.num_rows():
            raise ValueError(f"{in_dir} has no rows to export; loosen the filter or check the earlier stages")
        # `messages` first, then the reference's fields in its order; working columns stay behind.
        present = set(src.columns())
        cols = ["messages"] + [c for c in COLUMNS if c != "messages" and c in present]
        chain = src.lineage()
        ctx = released.context(chain)
        counts = CardCounts()

        def table_of(records: list[dict]) -> pa.Table:
            if export_format == "magpie":
                return released.sft_table([released.sft_row(r, _messages(r), ctx) for r in records], ctx["turns"])
            return with_json(pa.Table.from_pylist([{**{c: r.get(c) for c in cols}, "messages": _messages(r)}
                                                   for r in records]))

        def write(sharegpt: Path) -> None:
            # _BATCH_ROWS rows at a time, in order: shard k gets rows [k*SHARD_ROWS, ...), sharegpt.jsonl a line each
            pieces, k = [], 0
            with sharegpt.open("w") as f:
                for table in src.batches(_BATCH_ROWS, cols):  # all the rows, card and lines read
                    records = table.to_pylist()
                    pieces.append(table_of(records))
                    f.writelines(json.dumps(to_sharegpt(r), ensure_ascii=False) + "\n" for r in records)
                    counts.add(table, records)
                    if sum(p.num_rows for p in pieces) >= SHARD_ROWS:
                        out.write_shard(k, store.concat(pieces))
                        pieces, k = [], k + 1
                if pieces:
                    out.write_shard(k, store.concat(pieces))

        store.replace_whole(out.path / "sharegpt.jsonl", write)  # written whole or not at all, like a shard
        store.atomic_write_text(out.path / "README.md", render_card(name, counts, chain, card_info, export_format,
                                                                    model_license, data_license))
        columns = cols if export_format == "native" else out.columns()
        # Recorded with their sha256: a truncated or edited release file is found and the release redone.
        m = out.finish({"records": counts.profile.rows, "columns": columns}, files=("sharegpt.jsonl", "README.md"))
    pushed = None
    if push_to_hub:  # only on request: an upload is public and permanent enough to need intent
        import datasets

        datasets.load_dataset("parquet", data_dir=str(out.data), split="train").push_to_hub(push_to_hub)
        # After the data, whose push writes a card of its own; ours replaces it once the Hub accepts its front matter.
        DatasetCard.load(out.path / "README.md").push_to_hub(push_to_hub)
        pushed = push_to_hub
    return {**m["counts"], "shards": m["shards"], "out_dir": str(out.path), "pushed_to": pushed}
