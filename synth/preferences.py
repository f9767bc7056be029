"""Preference data for DPO, the paper's way (the "+DPO" rows of Table 1; ../shared/PAPER_FACTS.md, DPO).

    python -m synth preferences --config recipes/configs/synth/air.yaml      # the four stages below, in order

From a tagged set, under `<output_dir>/preferences/`, every folder a resumable dataset directory and a stage of
the stage table (synth/stages.py; `stages: [preferences, preference_pairs]` in a config means all four):

    prompts/   the instructions a preset picks (a filter run: tag conditions, then task categories balanced)
                                                                             stage `preference_prompts`
    samples/   k responses per instruction at T=0.8, top_p 1, through the chat template, stopping at the model's
               end-of-turn ids                                               stage `preferences` (the responder)
    scored/    every response's reward; chosen = the highest, rejected = the lowest; each instruction's status:
               ok, tie (best and worst score or text equal) or unscored (fewer than two scored responses: an
               empty answer, a failed scoring). Ties and unscored are counted and left out, never fatal.
                                                                   stage `preference_scores` (the reward model)
    export/    the ok pairs in TRL's preference format (`prompt`, `chosen`, `rejected` as conversational messages,
               plus `score_chosen`/`score_rejected` as UltraFeedback-binarized has them; export_format magpie: the
               released Magpie DPO sets' columns, synth/released.py), README.md (the card: counts, score margins,
               stand-ins, licences) and margins.png                   stage `preference_pairs`

The scorer is the taggers' reward machinery (synth/taggers/reward.py): a transformers sequence classifier (paper:
RLHFlow/ArmoRM-Llama3-8B-v0.1) or, offline, SmolLM2's mean log-probability, named as a stand-in everywhere.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pyarrow as pa

from core import reasoning, shards, store
from core.answer import answer_template, chat_sampling
from core.config import NON_SEMANTIC_ROLE_KEYS
from core.engines import SEED_SCHEME, stream_seed

from . import released
from .config import PreferenceArgs
from .export import FORMATS, _stand_ins, licenses, summary_row
from .filters import filter_dataset
from .taggers.reward import STAND_IN, STAND_IN_NOTE, check_reward_model, get_scorer

STATUSES = ("ok", "tie", "unscored")
# Tags (and the instruction's sampling) kept on each record: the native export's, and what the released DPO layout
# holds (export_format magpie).
_CARRY = ("task_category", "difficulty", "input_quality", "language", "instruct_reward", "intent", "knowledge",
          "quality_explanation", "gen_input_configs")
_CARD = Path(__file__).with_name("preference_card.md")


def _selection(pargs: PreferenceArgs, prompts) -> dict:
    """The pick the samples come from: the preset, and the tagged set it picked from (prompts/ records its id)."""
    picked = store.DatasetDir(prompts).manifest() or {}
    return {"preset": pargs.pref_preset, "size": pargs.pref_size, "seed": pargs.pref_seed,
            "input_id": (picked.get("config") or {}).get("input_id")}


def select_prompts(in_dir, out_dir, pargs: PreferenceArgs) -> dict:
    """prompts/: the instructions of the tagged set `in_dir` that pref_preset picks (a filter run)."""
    picked = filter_dataset(in_dir, out_dir, pargs.pref_preset, size=pargs.pref_size, seed=pargs.pref_seed)
    if not picked["kept"]:
        raise ValueError(f"preferences: preset {pargs.pref_preset!r} picked no instruction of {in_dir} "
                         f"({picked['emptied_by']!r} removed the last ones); choose another pref_preset "
                         "(python -m synth presets)")
    return picked


def preferences_config(role, pargs: PreferenceArgs, in_dir) -> dict:
    """What samples/ is keyed by: the responder, the sampling and the selection (itself keyed by the tagged set)."""
    sampling = {k: getattr(pargs, k) for k in ("pref_k", "pref_temperature", "pref_top_p", "pref_max_tokens",
                                                "pref_batch_size")}
    role_keys = {k: v for k, v in dataclasses.asdict(role).items() if k not in NON_SEMANTIC_ROLE_KEYS}
    return {**role_keys, **sampling, "selection": _selection(pargs, in_dir), "seed_scheme": SEED_SCHEME}


def sample_preferences(engine, role, pargs: PreferenceArgs, in_dir, out_dir, cluster=None) -> dict:
    """samples/: k responses to each instruction of prompts/ (`in_dir`); a finished run is reused."""
    out, src = store.DatasetDir(out_dir), store.DatasetDir(in_dir)

    def prepare():
        # The scorer of the next stage must load: refused now, in seconds, not after all k samples are drawn.
        scorer = pargs.pref_reward_role()
        check_reward_model(scorer.model, scorer.trust_remote_code, key="pref_reward_model")
        picked = src.require_complete()
        tpl = answer_template(engine, role.model)
        sampling = chat_sampling(engine, role.model, tpl, n=pargs.pref_k, temperature=pargs.pref_temperature,
                                 top_p=pargs.pref_top_p, max_tokens=pargs.pref_max_tokens, seed=pargs.pref_seed)
        columns = ["id", "instruction", *(c for c in _CARRY if c in set(src.columns()))]
        gen_cfg = {**sampling.to_dict(), "output_generator": role.model, "engine": engine.info.name}
        work = shards.ShardWork(str(out.path), sample_shard, role=role,
                                args=(str(src.path), columns, sampling, gen_cfg, tpl))
        manifest = dict(model=role.model, engine=engine.info.name, input=str(src.path), funnel=picked["funnel"],
                        sampling=sampling.to_dict())
        return work, shards.row_ranges(src.num_rows(), pargs.pref_batch_size), manifest

    return shards.write_stage(out, "preferences", preferences_config(role, pargs, in_dir), prepare, lambda t: {
        "instructions": t.get("kept", 0), "samples": t.get("samples", 0), "empty": t.get("empty", 0),
        "truncated": t.get("truncated", 0), "tokens": t.get("tokens", 0),
        **({"reasoning_unclosed": t["reasoning_unclosed"]} if "reasoning_unclosed" in t else {}),
        "selected_from": src.manifest()["counts"]["input"]}, engine, desc="preference samples", unit="prompt",
        cluster=cluster)


def sample_shard(engine, rows: tuple[int, int], in_dir: str, columns: list[str], sampling, gen_cfg: dict, tpl=None):
    """k responses to each instruction of input rows [start, stop), in one engine call. Each instruction's seed is
    keyed by its record id, so every sample has a stream of its own and a resumed shard draws the same ones. A
    thinking model's samples are its answers alone (`reasonings` holds the thinking); one whose thinking never ended
    has no answer, and counts as empty."""
    batch = shards.input_rows(in_dir, *rows, columns=columns)
    outs = engine.chat([[{"role": "user", "content": r["instruction"]}] for r in batch],
                       [sampling.replace(seed=stream_seed(sampling.seed or 0, "preferences", r["id"])) for r in batch])
    thinking = tpl is not None and tpl.reasoning_format is not None
    records, meta = [], {"kept": len(batch), "samples": 0, "empty": 0, "truncated": 0, "tokens": 0}
    meta |= {"reasoning_unclosed": 0} if thinking else {}
    for r, completions in zip(batch, outs):
        parts = [reasoning.split_completion(c, tpl) for c in completions]
        texts = [p.answer for p in parts]
        if thinking:
            meta["reasoning_unclosed"] += sum(not p.closed for p in parts)
        meta["samples"] += len(texts)
        meta["empty"] += sum(not t for t in texts)
        meta["truncated"] += sum(c.finish_reason == "length" for c in completions)
        meta["tokens"] += sum(c.num_tokens for c in completions)
        records.append({**r, "responses": texts, "finish_reasons": [c.finish_reason for c in completions],
                        "gen_response_configs": gen_cfg,
                        **({"reasonings": [p.reasoning for p in parts]} if thinking else {})})
    return records, meta


# -- scoring and pairing ------------------------------------------------------------------------
def scorer_kwargs(pargs: PreferenceArgs) -> dict:
    role = pargs.pref_reward_role()
    kw = dict(reward_model=role.model, dtype=role.dtype, device=role.device, trust_remote_code=role.trust_remote_code)
    return {**kw, "batch_size": role.hf_batch_size} if role.hf_batch_size else kw


def pair(responses: list[str], scores: list[float | None]) -> dict:
    """Chosen = the highest-scored response, rejected = the lowest (earliest sample on equal scores), and the
    status: unscored with fewer than two scores, tie when the two scores or texts are equal, else ok."""
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return {"status": "unscored", "chosen_index": None, "rejected_index": None}
    best = max(scored, key=lambda x: (x[0], -x[1]))[1]
    worst = min(scored, key=lambda x: (x[0], x[1]))[1]
    tie = scores[best] == scores[worst] or responses[best] == responses[worst]
    return {"status": "tie" if tie else "ok", "chosen_index": best, "rejected_index": worst}


def score_shard(engine, rows: tuple[int, int], in_dir: str, kwargs: dict):
    """Rewards for every non-empty response of samples rows [start, stop), then each instruction's pair. A score
    that is not a finite number counts as a failed scoring (None)."""
    scorer = get_scorer(**kwargs)
    batch = shards.input_rows(in_dir, *rows)
    todo = [(k, j) for k, r in enumerate(batch) for j, t in enumerate(r["responses"]) if t]
    raw = scorer.score([(batch[k]["instruction"], batch[k]["responses"][j]) for k, j in todo]) if todo else []
    scores = [[None] * len(r["responses"]) for r in batch]
    for (k, j), s in zip(todo, raw):
        scores[k][j] = float(s) if isinstance(s, (int, float)) and math.isfinite(s) else None
    records, meta = [], {"kept": len(batch), "scored": 0, "unscorable": 0, **dict.fromkeys(STATUSES, 0)}
    for r, sc in zip(batch, scores):
        p = pair(r["responses"], sc)
        meta[p["status"]] += 1
        meta["scored"] += sum(s is not None for s in sc)
        meta["unscorable"] += sum(s is None for s, t in zip(sc, r["responses"]) if t)
        c, rj = p["chosen_index"], p["rejected_index"]
        records.append({k: v for k, v in r.items() if k != "gen_response_configs"} | {
            "scores": sc, **p, "reward_model": scorer.label,
            "chosen": r["responses"][c] if c is not None else None,
            "rejected": r["responses"][rj] if rj is not None else None,
            "score_chosen": sc[c] if c is not None else None, "score_rejected": sc[rj] if rj is not None else None,
            "margin": sc[c] - sc[rj] if c is not None else None})
    return records, meta


def score_preferences(in_dir, out_dir, pargs: PreferenceArgs, cluster=None) -> dict:
    """scored/: every sample of samples/ (`in_dir`) scored, and each instruction's pair (shard by shard, resumable)."""
    src, scored = store.DatasetDir(in_dir), store.DatasetDir(out_dir)
    kwargs = scorer_kwargs(pargs)
    config = {"scorer": kwargs, "shard_size": pargs.pref_batch_size, "input_id": src.identity()}

    def prepare():
        # The scorer builds its own model (a reward model is no generation engine): an actor needs one GPU for it.
        work = shards.ShardWork(str(scored.path), score_shard, args=(str(src.path), kwargs), tensor_parallel_size=1)
        manifest = {"input": str(src.path), **({"stand_in": STAND_IN_NOTE} if kwargs["reward_model"] == STAND_IN
                                               else {})}
        return work, shards.row_ranges(src.num_rows(), pargs.pref_batch_size), manifest

    counts = shards.write_stage(scored, "preference_pairs", config, prepare,
                                lambda t: {k: t.get(k, 0) for k in ("kept", "scored", "unscorable", *STATUSES)},
                                desc="preference scores", unit="prompt", cluster=cluster)
    return {"instructions": counts["kept"], "pairs": counts["ok"], "scored": counts["scored"],
            "unscorable": counts["unscorable"], "dropped": {"tie": counts["tie"], "unscored": counts["unscored"]},
            **{k: counts[k] for k in ("seconds", "reused") if k in counts}}


# -- the export ---------------------------------------------------------------------------------
def to_trl(r: dict) -> dict:
    """One usable pair in TRL's conversational preference format (explicit prompt)."""
    return {"id": r["id"], "prompt": [{"role": "user", "content": r["instruction"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "score_chosen": r["score_chosen"], "score_rejected": r["score_rejected"], "margin": r["margin"],
            **{c: r.get(c) for c in ("task_category", "difficulty", "input_quality")}, "reward_model": r["reward_model"]}


def export_preferences(in_dir, out_dir, name: str, card_info: dict | None = None, export_format: str = "native",
                       model_license: str | None = None, data_license: str | None = None) -> dict:
    """export/: the ok pairs of scored/ as TRL preference records (data/part-*.parquet; export_format magpie: in the
    released Magpie DPO sets' columns, synth/released.py), README.md and margins.png. No usable pair is an error
    that says what was dropped: a DPO run would have nothing to learn from."""
    if export_format not in FORMATS:
        raise ValueError(f"export_format must be one of {', '.join(FORMATS)}, got {export_format!r}")
    src, out = store.DatasetDir(in_dir), store.DatasetDir(out_dir)
    # The keys added later are None at their defaults: an export made before they existed is still this config.
    config = {"name": name, "card_info": card_info or {}, "input_id": src.identity(), "model_license": model_license,
              "data_license": data_license, "format": None if export_format == "native" else export_format}
    m = out.begin("preference_export", config, input=str(in_dir))
    counts = src.manifest()["counts"]
    if not counts["ok"]:
        raise ValueError(f"{in_dir}: no usable preference pair in {counts['kept']:,} instructions ({counts['tie']:,} "
                         f"ties, {counts['unscored']:,} unscored); raise pref_k or pref_temperature, or check the "
                         "reward model")
    if m["status"] != "complete":
        ctx = released.context(src.lineage())
        rows, chosen, rejected, status_by_cat, scorer = [], [], [], {}, None
        for table in src.batches(10_000):
            for r in table.to_pylist():
                cat = r.get("task_category") or "untagged"
                status_by_cat.setdefault(cat, dict.fromkeys(STATUSES, 0))[r["status"]] += 1
                if r["status"] == "ok":
                    rows.append(released.pair_row(r, ctx) if export_format == "magpie" else to_trl(r))
                    chosen.append(r["score_chosen"])
                    rejected.append(r["score_rejected"])
                    scorer = scorer or r["reward_model"]
        schema = released.PREFERENCE_SCHEMA if export_format == "magpie" else None
        for k, start in enumerate(range(0, len(rows), 50_000)):
            out.write_shard(k, pa.Table.from_pylist(rows[start:start + 50_000], schema=schema))
        plot_scores(chosen, rejected, out.path / "margins.png", scorer)
        store.atomic_write_text(out.path / "README.md", render_card(
            name, counts, chosen, rejected, status_by_cat, src, card_info or {}, scorer, export_format,
            licenses(ctx["responder"], model_license or (card_info or {}).get("license"), data_license)))
        m = out.finish({"pairs": len(rows), "instructions": counts["kept"], "tie": counts["tie"],
                        "unscored": counts["unscored"]})
    c = m["counts"]
    return {**c, "dropped": {"tie": c["tie"], "unscored": c["unscored"]}, "out_dir": str(out.path)}


def plot_scores(chosen: list[float], rejected: list[float], path: Path, scorer: str) -> None:
    """Two panels: the chosen and rejected score distributions, and the margins (chosen - rejected)."""
    from core.plots import pyplot

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = min(40, max(5, len(chosen) // 4))
    a.hist([chosen, rejected], bins=bins, label=["chosen", "rejected"], color=["tab:green", "tab:red"], alpha=0.8)
    a.set(title="response scores", xlabel=scorer, ylabel="pairs")
    a.legend()
    b.hist([c - r for c, r in zip(chosen, rejected)], bins=bins, color="tab:blue")
    b.set(title=f"margins (chosen - rejected), {len(chosen):,} pairs", xlabel="score margin", ylabel="pairs")
    fig.tight_layout()
    store.replace_whole(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def render_card(name: str, counts: dict, chosen: list[float], rejected: list[float], by_cat: dict,
                scored: store.DatasetDir, card_info: dict, scorer: str, export_format: str = "native",
                lic: dict | None = None) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    chain = scored.lineage()
    by_stage = {mm.get("stage"): mm for mm in reversed(chain)}
    samples, pick = by_stage.get("preferences") or {}, by_stage.get("filter") or {}
    model = samples.get("model") or "unknown"
    lic = lic or licenses(model)
    n = counts["ok"]
    front = DatasetCardData(license=lic["ids"], task_categories=["text-generation"], tags=["synthetic", "magpie", "dpo",
                            "preference"], configs=[{"config_name": "default", "data_files": [
                                {"split": "train", "path": "data/part-*.parquet"}]}])
    card = DatasetCard.from_template(
        front, template_path=str(_CARD), name=name, n=n, counts=counts, model=model, licenses=lic,
        export_format=export_format,
        k=(samples.get("sampling") or {}).get("n", "k"),
        sampling=json.dumps({k: v for k, v in (samples.get("sampling") or {}).items()
                             if k in ("n", "temperature", "top_p", "max_tokens")}),
        scorer=scorer,
        funnel=pick.get("funnel") or samples.get("funnel") or [], preset=(pick.get("config") or {}).get("preset"),
        stand_ins=_stand_ins(chain, card_info), by_cat=sorted(by_cat.items(), key=lambda kv: -sum(kv[1].values())),
        chosen=summary_row(chosen), rejected=summary_row(rejected),
        margins=summary_row([c - r for c, r in zip(chosen, rejected)]), statuses=STATUSES)
    return str(card)


def pair_scores(export_dir) -> tuple[list[float], list[float]]:
    """(chosen, rejected) scores of every pair of a preference export, native or magpie layout."""
    ds = store.DatasetDir(export_dir)
    cols = [c for c in ("score_chosen", "score_rejected", "rewards_armorm") if c in set(ds.columns())]
    chosen, rejected = [], []
    for t in ds.tables(cols):
        c, r = released.pair_scores(t)
        chosen += c
        rejected += r
    return chosen, rejected


def wandb_logs(export_dir) -> dict:
    """The preference stage's score distributions for W&B: histograms of chosen, rejected and margins, the plot."""
    try:
        import wandb
    except ImportError:
        return {}
    ds = store.DatasetDir(export_dir)
    if not ds.complete:
        return {}
    chosen, rejected = pair_scores(export_dir)
    scores = {"score_chosen": chosen, "score_rejected": rejected, "margin": [c - r for c, r in zip(chosen, rejected)]}
    out = {f"preference_pairs/{c}": wandb.Histogram(v) for c, v in scores.items()}
    if (ds.path / "margins.png").exists():
        out["preference_pairs/margins_plot"] = wandb.Image(str(ds.path / "margins.png"))
    return out
