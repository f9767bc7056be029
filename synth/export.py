"""Export a dataset directory as a release: TRL-ready Parquet, ShareGPT JSONL and a dataset card.

    out_dir/data/part-0000k.parquet             `messages` plus the reference release's fields
    out_dir/sharegpt.jsonl                      {"id", "conversations": [{"from", "value"}], tags...}
    out_dir/README.md                           the card: source, template, sampling, filters, counts,
                                                tag distributions, and what stood in for the paper's models

`datasets.load_dataset("parquet", data_dir=out_dir + "/data")` opens it, and TRL's SFTTrainer
takes its `messages` column as it is. Nothing is uploaded unless `push_to_hub` names a repo.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

from . import store
from .schema import CATEGORICAL, COLUMNS, TAGS, response_length

SHARD_ROWS = 50_000
_SHAREGPT_ROLE = {"user": "human", "assistant": "gpt", "system": "system"}

# The generator's license governs its outputs (the reference releases say so in their cards).
_LICENSES = [  # (substring of the lower-cased model name, HF license id, sentence)
    ("llama-3.3", "llama3.3", "the Llama 3.3 Community License"),
    ("llama-3.1", "llama3.1", "the Llama 3.1 Community License"),
    ("llama-3", "llama3", "the Meta Llama 3 Community License"),
    ("llama3", "llama3", "the Meta Llama 3 Community License"),
    ("smollm", "apache-2.0", "Apache-2.0, the license of SmolLM2"),
    ("qwen2", "apache-2.0", "Apache-2.0 for most Qwen2 sizes (check the model card of the size used)"),
]


def _messages(r: dict) -> list[dict]:
    if r.get("messages"):
        return [{"role": m["role"], "content": m["content"]} for m in r["messages"]]
    return [{"role": "user", "content": r.get("instruction") or ""},
            {"role": "assistant", "content": r.get("response") or ""}]


def to_sharegpt(r: dict) -> dict:
    conv = [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in _messages(r)]
    return {"id": r.get("id"), "conversations": conv, **{t: r.get(t) for t in TAGS if t in r}}


def _manifest_chain(path: Path, hops: int = 12) -> list[dict]:
    """This directory's manifest and those of its inputs, following each stage's `input`."""
    chain, seen = [], set()
    while path is not None and hops > 0 and path.resolve() not in seen:
        seen.add(path.resolve())
        m = store.DatasetDir(path).manifest()
        if m is None:
            break
        chain.append(m)
        path = Path(m["input"]) if m.get("input") else None
        hops -= 1
    return chain


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


def license_for(model: str | None) -> tuple[str, str]:
    name = (model or "").lower()
    for key, lic, sentence in _LICENSES:
        if key in name:
            return lic, sentence
    return "other", f"the license of {model or 'the generator model'} (check its model card)"


# -- the card ---------------------------------------------------------------------------------
def _table(head: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _dist(records: list[dict], field: str, order: tuple[str, ...] = ()) -> str:
    from .stats import category_counts

    n = len(records) or 1
    return _table((field, "rows", "share"),
                  [(k, c, f"{100 * c / n:.1f}%") for k, c in category_counts(records, field, order)])


def _numeric(records: list[dict], fields: tuple[str, ...]) -> str:
    rows = []
    for f in fields:
        v = [r[f] for r in records if isinstance(r.get(f), (int, float)) and not math.isnan(r[f])]
        if v:
            q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
            rows.append((f, len(v), len(records) - len(v), f"{min(v):.3g}", f"{q[0]:.3g}", f"{q[1]:.3g}",
                         f"{q[2]:.3g}", f"{max(v):.3g}", f"{statistics.fmean(v):.3g}"))
        else:
            rows.append((f, 0, len(records), "", "", "", "", "", ""))
    return _table(("field", "tagged", "untagged", "min", "p25", "median", "p75", "max", "mean"), rows)


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def render_card(name: str, records: list[dict], chain: list[dict], card_info: dict) -> str:
    first = records[0] if records else {}
    gin, gres = first.get("gen_input_configs") or {}, first.get("gen_response_configs") or {}
    by_stage = {m.get("stage"): m for m in reversed(chain)}  # nearest manifest of each stage wins
    model = (card_info.get("source_model") or gin.get("input_generator")
             or (by_stage.get("instructions") or {}).get("model") or "unknown")
    response_model = gres.get("output_generator") or (by_stage.get("responses") or {}).get("model") or model
    template = card_info.get("pre_query_template") or first.get("pre_query_template") or \
        ((by_stage.get("instructions") or {}).get("template") or {}).get("pre_query_template")
    lic, lic_sentence = (card_info["license"], card_info["license"]) if card_info.get("license") \
        else license_for(model)
    langs = sorted({str(r["language"]).lower() for r in records if r.get("language")})
    turns = Counter(sum(m["role"] == "user" for m in _messages(r)) for r in records)
    filt = card_info.get("filter") or by_stage.get("filter") or {}
    funnel = filt.get("funnel")
    notes = _stand_ins(chain, card_info)

    from huggingface_hub import DatasetCardData

    front = DatasetCardData(
        license=lic, language=langs or None, task_categories=["text-generation"],
        size_categories=[_size_category(len(records))], tags=["synthetic", "magpie", "instruction-tuning"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/part-*.parquet"}]}])
    out = [f"---\n{front.to_yaml()}\n---", f"# {card_info.get('title', name)}", ""]
    out.append(card_info.get("description") or
               f"{len(records):,} conversations synthesized with MAGPIE (Xu et al. 2024, arXiv 2406.08464): "
               f"instructions sampled from {model} given only its pre-query template, answered by "
               f"{response_model} through its chat template.")
    out += ["", "## License", "",
            f"The outputs of a model fall under that model's license: this set follows {lic_sentence}. "
            "Check it before use."]
    if notes:
        out += ["", "## Stand-ins for the paper's models", "",
                "This run did not use every model of the paper. What replaced them:", ""]
        out += [f"- {n}" for n in notes]
    out += ["", "## Source", "", _table(("", ""), [
        ("instruction model", model), ("response model", response_model),
        ("engine", gin.get("engine") or (by_stage.get("instructions") or {}).get("engine", "")),
        ("rows", f"{len(records):,}"), ("turns", ", ".join(f"{k}: {v:,}" for k, v in sorted(turns.items())))])]
    if template is not None:
        out += ["", "### Pre-query template", "", "The only input to step 1 (Python repr, so newlines show):",
                "", "```", repr(template), "```"]
    cells = Counter(((r.get("gen_input_configs") or {}).get("temperature"),
                     (r.get("gen_input_configs") or {}).get("top_p")) for r in records)
    out += ["", "### Sampling", "", "Instructions (step 1), rows per cell:", "",
            _table(("temperature", "top_p", "rows"), [(t, p, n) for (t, p), n in sorted(cells.items(), key=str)])]
    if gres:
        keep = {k: v for k, v in gres.items() if k in ("temperature", "top_p", "max_tokens", "repetition_penalty")}
        out += ["", f"Responses (step 2): `{json.dumps(keep)}`"]
    out += ["", "## Filters", ""]
    if filt:
        out += [f"Preset `{filt.get('preset', 'custom')}`" + (f" ({filt['source']})" if filt.get("source") else "")
                + ": conditions in order, then the cut.", ""]
        if funnel:
            total = funnel[0][1] or 1
            out.append(_table(("step", "rows left", "of input"),
                              [(s, f"{n:,}", f"{100 * n / total:.1f}%") for s, n in funnel]))
    else:
        out.append("None: the raw set.")
    out += ["", "## Tag distributions", ""]
    for field, order in CATEGORICAL.items():
        out += [f"### {field}", "", _dist(records, field, order), ""]
    out += ["### Numeric tags and lengths (characters)", "",
            _numeric([{**r, "instruction_chars": len(r.get("instruction") or ""),
                       "response_chars": response_length(r)} for r in records],
                     ("instruct_reward", "reward_difference", "min_neighbor_distance", "repeat_count",
                      "instruction_chars", "response_chars")), ""]
    out += ["## Use", "", "```python", "from datasets import load_dataset",
            f'ds = load_dataset("parquet", data_dir="{card_info.get("data_dir", "data")}", split="train")',
            "# `messages` is TRL's conversational format: SFTTrainer(train_dataset=ds, ...)", "```", "",
            "`sharegpt.jsonl` holds the same rows as ShareGPT `conversations` (from: human/gpt/system).", ""]
    for extra in card_info.get("notes", []):
        out.append(f"- {extra}")
    out += ["", "## Citation", "", "```bibtex", "@article{xu2024magpie,",
            "  title={Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with Nothing},",
            "  author={Xu, Zhangchen and Jiang, Fengqing and Niu, Luyao and Deng, Yuntian and Poovendran, Radha "
            "and Choi, Yejin and Lin, Bill Yuchen},", "  journal={arXiv preprint arXiv:2406.08464},", "  year={2024}",
            "}", "```", ""]
    return "\n".join(out)


# -- the stage --------------------------------------------------------------------------------
def export(in_dir, out_dir, name: str, card_info: dict | None = None, push_to_hub: str | None = None) -> dict:
    """Write the release of `in_dir` (a complete dataset directory) as a dataset directory of its own:
    `data/part-*.parquet` (TRL's `messages` first, then the reference's fields), `sharegpt.jsonl` and the card
    `README.md`, each written whole or not at all; resumable and keyed by its input like every stage."""
    card_info = dict(card_info or {})
    src = store.DatasetDir(in_dir)
    out = store.DatasetDir(out_dir)
    m = out.begin("export", {"name": name, "card_info": card_info, "input_id": src.identity()}, input=str(in_dir))
    if m["status"] != "complete":
        records = src.records()
        if not records:
            raise ValueError(f"{in_dir} has no rows to export; loosen the filter or check the earlier stages")
        # `messages` first, then the reference's fields in its order; working columns stay behind.
        cols = ["messages"] + [c for c in COLUMNS if c != "messages" and any(c in r for r in records)]
        rows = [{**{c: r.get(c) for c in cols}, "messages": _messages(r)} for r in records]
        for k in range(0, len(rows), SHARD_ROWS):
            out.write_shard(k // SHARD_ROWS, rows[k:k + SHARD_ROWS])
        store.atomic_write_text(out.path / "sharegpt.jsonl", "".join(
            json.dumps(to_sharegpt(r), ensure_ascii=False) + "\n" for r in records))
        chain = _manifest_chain(Path(in_dir))
        store.atomic_write_text(out.path / "README.md", render_card(name, records, chain, card_info))
        m = out.finish({"records": len(records), "columns": cols})
    pushed = None
    if push_to_hub:  # only on request: an upload is public and permanent enough to need intent
        import datasets
        from huggingface_hub import HfApi

        ds = datasets.load_dataset("parquet", data_dir=str(out.data), split="train")
        ds.push_to_hub(push_to_hub)
        HfApi().upload_file(path_or_fileobj=str(out.path / "README.md"), path_in_repo="README.md",
                            repo_id=push_to_hub, repo_type="dataset")
        pushed = push_to_hub
    return {**m["counts"], "shards": m["shards"], "out_dir": str(out.path), "pushed_to": pushed}
