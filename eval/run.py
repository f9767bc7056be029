"""Evaluate one model: answers, references, judgments and scores for each benchmark, then lm-eval.

    <output_dir>/alpaca_eval/{prompts,answers,judgments}/   dataset directories (resumable)
    <output_dir>/alpaca_eval/annotations.json               alpaca_eval's annotation format
    <output_dir>/arena_hard/{prompts,answers,judgments}/
    <output_dir>/arena_hard/scores.json                     one row per category (v2.0), the style numbers
    <output_dir>/arena_hard/answer_metadata.json            {model: {question_id: metadata}}, as arena-hard's
                                                            model_answer files carry it (model and baseline)
    <output_dir>/lm_eval/results_<date>.json                lm-eval's results and samples (its tracker's files)
    <output_dir>/results.json                               every score, written last

Answers go through the same stage as MAGPIE's step 2 (`core.answer`), with each benchmark's
decoding: AlpacaEval greedy with repetition penalty 1.2 (paper), Arena-Hard greedy (its repo).
Every step resumes: a killed evaluation started again redoes only the missing shards, and
`results.json` appears only when every benchmark has its score.
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from core import procs, store
from core.answer import generate_responses, responses_config
from core.config import ModelArgs, ResponseArgs
from core.engines import LazyEngine
from core.store import atomic_write_text

from . import benchmarks
from .config import BenchArgs, EvalArgs, HarnessArgs, JudgeArgs
from .harness import parse_model_args, run_harness
from .judges import alpaca_annotator_model, check_judges, write_alpaca_annotator

JUDGED = ("alpaca_eval", "arena_hard")


def trained_model(path: str) -> str:
    """A PEFT run's merged model where there is one (train/sft.py writes `<output_dir>/merged`)."""
    p = Path(path)
    return str(p / "merged") if (p / "merged" / "config.json").exists() else path


def default_name(model: str) -> str:
    p = Path(model)
    if p.exists():  # runs/<recipe>/sft[/merged] or runs/baselines/<set>/sft -> the recipe or the set; .../dpo -> <recipe>-dpo
        parts = [x for x in p.resolve().parts if x != "merged"]
        return parts[-2] if parts[-1] == "sft" else f"{parts[-2]}-dpo" if parts[-1] == "dpo" else parts[-1]
    return model.split(":")[-1].split("/")[-1]


def detect_dataset(model: str) -> str | None:
    """The SFT set a trained model learnt from, as a name the paper table knows, or None. train_summary.json
    records the paper row where the trainer was given one (DPO), else the `dataset` argument: a registered set id (sharegpt, ...) is the row itself; a Magpie export
    directory `runs/<recipe>/export` becomes `<recipe>-<filter preset>`."""
    p = Path(model)
    summary = next((f for f in (p / "train_summary.json", p.parent / "train_summary.json") if f.exists()), None)
    info = json.loads(summary.read_text()) if summary else {}
    if info.get("row"):  # a trainer that knows its row (train.dpo: the +DPO rows) says so
        return info["row"]
    dataset = info.get("dataset")
    if not dataset:
        return None
    dp = Path(dataset)
    if dp.is_dir():
        filt = store.DatasetDir(dp.parent / "filtered").manifest() or {}
        preset = filt.get("config", {}).get("preset")
        return f"{dp.parent.name}-{preset}" if preset else dp.parent.name
    return dataset


# ---------------------------------------------------------------------------------------------
# Answers

def _answer_dirs(margs: ModelArgs, prompts: list[dict], root: Path, max_tokens: int, repetition_penalty: float,
                 batch_size: int):
    """root/prompts (written here once), root/answers, the answers' ResponseArgs and whether they are done."""
    pdir = store.DatasetDir(root / "prompts")
    pdir.begin("prompts", {"prompts_hash": store.config_hash({"prompts": prompts})})
    if not pdir.complete:
        pdir.write_shard(0, prompts)
        pdir.finish({"prompts": len(prompts)})
    rargs = ResponseArgs(response_max_tokens=max_tokens, response_temperature=0.0,
                         response_repetition_penalty=repetition_penalty, response_batch_size=batch_size)
    adir = store.DatasetDir(root / "answers")
    done = adir.complete and store.config_hash(adir.manifest()["config"]) == store.config_hash(
        responses_config(margs, rargs, pdir.path))
    return pdir, adir, rargs, done


def answer_set(engine, margs: ModelArgs, prompts: list[dict], root: Path, *, max_tokens: int,
               repetition_penalty: float, batch_size: int) -> dict[str, dict]:
    """Greedy answers to `prompts` -> {id: record with `response`}; root/{prompts,answers}. `engine` (a LazyEngine)
    loads only when answers are missing: a finished set with the same config is read back without the model."""
    pdir, adir, rargs, done = _answer_dirs(margs, prompts, root, max_tokens, repetition_penalty, batch_size)
    if not done:  # a mismatching finished set is refused by generate_responses with a clear message
        generate_responses(engine, margs, rargs, pdir.path, adir.path)
    return {r["id"]: r for r in adir.records()}


def answer_sets(margs: ModelArgs, work: list[tuple[list, Path, dict]], batch_size: int) -> list[dict[str, dict]]:
    """One model's answers to several prompt sets ((prompts, root, decoding) each), one engine for all of them,
    built only if some answers are missing and closed at the end."""
    with LazyEngine(margs.role()) as engine:
        return [answer_set(engine, margs, prompts, root, batch_size=batch_size, **dec) for prompts, root, dec in work]


def answers_in_own_process(margs: ModelArgs, work: list[tuple[list, Path, dict]], batch_size: int):
    """answer_sets, in a process of its own where the model needs one (core.procs) and answers are missing."""
    missing = not all(_answer_dirs(margs, p, root, batch_size=batch_size, **dec)[3] for p, root, dec in work)
    isolated = missing and procs.isolate(margs.engine)
    return procs.call(answer_sets, margs, work, batch_size, isolated=isolated)


# ---------------------------------------------------------------------------------------------
# Judgments

def _pairs(bench: str, prompts, refs, answers, seed: int) -> list[dict]:
    """The judge's work items. AlpacaEval: one per prompt, outputs in a seeded random order.
    Arena-Hard: two per prompt, game 1 with the baseline as A, game 2 with it as B."""
    from .judges import alpaca_switched

    items = []
    switched = alpaca_switched([p["instruction"] for p in prompts], seed) if bench == "alpaca_eval" else []
    for n, p in enumerate(prompts):
        ref, ans = refs[p["id"]], answers[p["id"]]["response"]
        for game, swapped in [(1, switched[n])] if bench == "alpaca_eval" else [(1, False), (2, True)]:
            a, b = (ans, ref) if swapped else (ref, ans)
            items.append({"id": p["id"], "game": game, "swapped": swapped, "question": p["instruction"],
                          "answer_a": a, "answer_b": b})
    return items


def judge_set(judge, bench: str, items: list[dict], root: Path, config: dict, batch_size: int) -> list[dict]:
    jdir = store.DatasetDir(root / "judgments")
    # The batch size fixes which items each shard holds: it is part of what a resumed run must match.
    jdir.begin("judgments", {**config, "batch_size": batch_size}, judge=judge.info())
    if not jdir.complete:
        for k, batch in jdir.pending(items, batch_size, f"judge {bench}", "judgment"):
            # Identical answers are a tie without asking (alpaca_eval does the same): in the tiny
            # profile the reference model answering itself would otherwise be judged on noise.
            todo = [it for it in batch if it["answer_a"] != it["answer_b"]]
            verdicts = iter(judge.judge(todo))
            rows, unparsed = [], 0
            for it in batch:
                identical = it["answer_a"] == it["answer_b"]
                v = {"judgment": None, "verdict": None} if identical else next(verdicts)
                unparsed += v["verdict"] is None and not identical
                rows.append({"id": it["id"], "game": it["game"], "swapped": it["swapped"], "judgment": v["judgment"],
                             "verdict": None if v["verdict"] is None else str(v["verdict"]), "identical": identical})
            jdir.write_shard(k, rows, {"judgments": len(rows), "unparsed": unparsed})
        t = jdir.shard_totals()
        jdir.finish({"judgments": t.get("judgments", 0), "unparsed": t.get("unparsed", 0)})
    return jdir.records()


def alpaca_annotations(prompts, refs, answers, judgments, model_name, ref_name, annotator) -> list[dict]:
    """alpaca_eval's annotation rows: preference 1 (output_1, the reference, wins), 2 (the model
    wins), 1.5 (tie), NaN (unreadable judgment)."""
    by_id = {j["id"]: j for j in judgments}
    rows = []
    for p in prompts:
        j = by_id[p["id"]]
        v = math.nan if j["verdict"] is None else float(j["verdict"])
        pref = 1.5 if j["identical"] else (3.0 - v if j["swapped"] else v)
        rows.append({"instruction": p["instruction"], "output_1": refs[p["id"]],
                     "output_2": answers[p["id"]]["response"], "generator_1": ref_name, "generator_2": model_name,
                     "preference": pref, "index": p["index"], "annotator": annotator, "raw_judgment": j["judgment"]})
    return rows


def score_arena(prompts, refs, answers, judgments, name, ref_name, root: Path, judge: str, bargs: BenchArgs,
                seed: int) -> dict:
    """Arena-Hard's scores (eval/arena.py) of one model: root/scores.json and root/answer_metadata.json, which
    `python -m eval arena` reads to score models together."""
    from . import leaderboard
    from .arena import answer_metadata, format_score, position_consistency

    version, control = bargs.arena_version, list(bargs.arena_control_features)
    cat = {p["id"]: p.get("category") or "" for p in prompts}
    cats = dict.fromkeys(cat.values())
    baselines = {c: benchmarks.arena_baseline(version, c or None) if bargs.reference == "hub" else ref_name
                 for c in cats}
    meta: dict[str, dict] = {}  # {model: {question_id: answer_metadata}}, one tokenizer for all
    for i, c in cat.items():
        meta.setdefault(baselines[c], {})[i] = answer_metadata(refs[i])
    meta[name] = {i: answer_metadata(r["response"]) for i, r in answers.items()}
    atomic_write_text(root / "answer_metadata.json", json.dumps(meta))
    if name in baselines.values():
        # The baseline against itself: Arena-Hard lists it at 50.0 (-0.0 / +0.0) by definition.
        rows = [{"model": name, "score": 50.0, "ci_lower": 50.0, "ci_upper": 50.0, "n_unparsed": 0,
                 "n_judgments": sum(version == "v0.1" or cat[j["id"]] == c for j in judgments),
                 "note": "the model is the baseline", "version": version, "category": c or None, "baseline": name}
                for c in (cats if version == "v2.0" else [""])]
    else:
        games = leaderboard.games(prompts, judgments, name, baselines)
        pc = position_consistency(games)[name]
        table = leaderboard.score(games, meta, version, control, bargs.arena_bootstrap_rounds, seed)
        rows = [{**r, "position_consistency": pc} for r in table.to_dict("records")]
    style = {m: leaderboard.style(x) for m, x in meta.items()}
    atomic_write_text(root / "scores.json", json.dumps({"model": name, "judge": judge, "version": version,
                                                        "control": control, "baselines": baselines, "style": style,
                                                        "rows": rows}, indent=2, default=str))
    head = next((r for r in rows if r.get("category") == "hard_prompt"), rows[0])  # show_result's default category
    out = {**head, "display": format_score(head), "judge": judge, "avg_tokens": style[name]["avg_tokens"]}
    if version == "v2.0":
        out["categories"] = {r.get("category"): {k: r.get(k) for k in ("score", "ci_lower", "ci_upper", "baseline",
                                                                        "n_judgments", "n_unparsed")}
                             | {"display": format_score(r)} for r in rows}
    return out


def evaluate(margs: ModelArgs, eargs: EvalArgs, jargs: JudgeArgs, bargs: BenchArgs, hargs: HarnessArgs,
             log=lambda *_a, **_k: None) -> dict:
    t0 = time.perf_counter()
    out = Path(eargs.output_dir)
    margs = replace(margs, model=trained_model(margs.model))
    name = eargs.model_name or default_name(margs.model)
    result = {"model": margs.model, "model_name": name, "profile": eargs.profile,
              "dataset": detect_dataset(margs.model), "row": eargs.row, "benchmarks": {}}
    judged = [b for b in eargs.benchmarks if b in JUDGED]
    # Fail before any answer is generated when a judge cannot judge (retired, no key, refused): finding out after
    # hours of generation would waste them (the answers would be kept, but the run would stop there).
    check_judges(jargs, judged)
    sources = {"alpaca_eval": (bargs.alpaca_prompts, bargs.alpaca_limit),
               "arena_hard": (bargs.arena_questions, bargs.arena_limit)}
    sets = {b: benchmarks.load(b, *sources[b], version=bargs.arena_version) for b in judged}
    decoding = {"alpaca_eval": {"max_tokens": bargs.alpaca_max_tokens,
                                "repetition_penalty": bargs.alpaca_repetition_penalty},
                "arena_hard": {"max_tokens": bargs.arena_max_tokens, "repetition_penalty": 1.0}}
    if bargs.reference == "hub":
        missing = [b for b in judged if sets[b][1] is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: the prompt file has no reference outputs; "
                             "set reference: generate with a reference_model")

    # 1. The model's answers: one engine for every set, loaded only if some answers are missing (in a process
    # of its own where the model needs one: it is gone before the reference model and the judge load).
    answers = dict(zip(judged, answers_in_own_process(
        margs, [(sets[b][0], out / b, decoding[b]) for b in judged], bargs.answer_batch_size)))

    # 2. References: the benchmark's own, or a local model's answers shared by every evaluated model.
    refs, ref_names = {}, {}
    for b in judged:
        if bargs.reference == "hub":
            refs[b] = sets[b][1]
            ref_names[b] = benchmarks.ALPACA_REFERENCE_NAME if b == "alpaca_eval" else ", ".join(dict.fromkeys(
                benchmarks.arena_baseline(bargs.arena_version, p.get("category")) for p in sets[b][0]))
    if bargs.reference == "generate" and judged:
        from dataclasses import asdict

        rmargs = ModelArgs(**asdict(bargs.reference_role(margs.role())))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", rmargs.model).strip("_")
        # v2.0 asks other questions: its references live beside v0.1's, not over them.
        kinds = {b: b if b == "alpaca_eval" or bargs.arena_version == "v0.1" else f"{b}_{bargs.arena_version}"
                 for b in judged}
        recs = answers_in_own_process(
            rmargs, [(sets[b][0], Path(bargs.references_dir) / kinds[b] / slug, decoding[b]) for b in judged],
            bargs.answer_batch_size)
        for b, r in zip(judged, recs):
            refs[b] = {i: x["response"] for i, x in r.items()}
            ref_names[b] = default_name(rmargs.model)

    # 3. Judgments (one judge model for both benchmarks, in a process of its own where it needs one) and scores.
    by_engine = [b for b in judged if b == "arena_hard" or jargs.alpaca_annotator == "engine"]
    work = {b: (_pairs(b, sets[b][0], refs[b], answers[b], eargs.seed), out / b, {
        "answers": store.DatasetDir(out / b / "answers").manifest()["config_hash"],
        "references": store.config_hash({"refs": refs[b]}), "seed": eargs.seed,
        "judge": make_judge(jargs, b, None).info()}) for b in by_engine}
    missing = any(not _judged(root, config, jargs.judge_batch_size) for _, root, config in work.values())
    judged_sets = dict(zip(work, procs.call(judge_sets, jargs, [(b, *w) for b, w in work.items()],
                                            isolated=missing and procs.isolate(jargs.judge_engine))))
    for b in judged:
        prompts = sets[b][0]
        res = _score(b, prompts, refs[b], answers[b], judged_sets.get(b), name, ref_names[b], out / b, eargs, jargs,
                     bargs)
        # Length is what AlpacaEval's LC corrects for: show it beside every score.
        chars = round(sum(len(r["response"]) for r in answers[b].values()) / max(len(answers[b]), 1), 1)
        res.update(prompts=len(prompts), reference=ref_names[b], avg_answer_chars=chars)
        result["benchmarks"][b] = res
        log({f"{b}/{k}": v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    # 4. lm-eval harness.
    if "lm_eval" in eargs.benchmarks:
        backend = hargs.lm_eval_backend or ("vllm" if margs.engine == "vllm" else "hf")
        # lm-eval builds its own model (vLLM: one LLM for the whole group): a process of its own where it needs one.
        h = procs.call(run_harness, margs.model, out / "lm_eval", hargs.lm_eval_tasks,
                       isolated=procs.isolate(backend), backend=backend, include_path=hargs.lm_eval_include_path,
                       num_fewshot=hargs.lm_eval_num_fewshot, limit=hargs.lm_eval_limit,
                       batch_size=hargs.lm_eval_batch_size, apply_chat_template=hargs.lm_eval_apply_chat_template,
                       dtype=margs.dtype, device=None if margs.device == "auto" else margs.device, seed=eargs.seed,
                       model_args={**_vllm_role_args(margs, backend), **parse_model_args(hargs.lm_eval_model_args)})
        result["benchmarks"]["lm_eval"] = h
        log({f"lm_eval/{t}/{m}": v for t, ms in h.items() if isinstance(ms, dict)
             for m, v in ms.items() if isinstance(v, (int, float))})

    result["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str))
    return result


def _vllm_role_args(margs: ModelArgs, backend: str) -> dict:
    """The model role's vLLM settings as lm-eval model_args (its vllm backend builds its own LLM)."""
    if backend != "vllm":
        return {}
    role = margs.role()
    return {"tensor_parallel_size": role.tensor_parallel_size, "gpu_memory_utilization": role.gpu_memory_utilization,
            **({"max_model_len": role.max_model_len} if role.max_model_len else {})}


def make_judge(jargs: JudgeArgs, bench: str, engine):
    """The pairwise judge of `bench`; `engine` a function that builds the judge's engine on first use (None:
    for its info() only)."""
    from .judges import PairwiseJudge

    role = jargs.role()
    return PairwiseJudge(engine or (lambda: None), bench, jargs.arena_judge_max_tokens, prefill=jargs.judge_prefill,
                         prompt_file=jargs.arena_judge_prompt_file, top_logprobs=jargs.alpaca_top_logprobs,
                         names=(role.engine, role.model))


def _judged(root: Path, config: dict, batch_size: int) -> bool:
    return store.DatasetDir(root / "judgments").reusable({**config, "batch_size": batch_size}) is not None


def judge_sets(jargs: JudgeArgs, work: list[tuple[str, list, Path, dict]]) -> list[list[dict]]:
    """The judgments of every (benchmark, items, root, config): one judge engine, built only if some are missing."""
    with LazyEngine(jargs.role()) as engine:
        return [judge_set(make_judge(jargs, b, engine), b, items, root, config, jargs.judge_batch_size)
                for b, items, root, config in work]


def judge_record(b: str, jargs: JudgeArgs) -> dict:
    """Which judge scored benchmark `b`, as results.json and the table carry it: the model, the alpaca_eval
    annotator config (AlpacaEval; `engine`: our judge on its weighted prompt) and a server of the user's own."""
    package = b == "alpaca_eval" and jargs.alpaca_annotator != "engine"
    rec = {"judge_model": alpaca_annotator_model(jargs.alpaca_annotator) if package else jargs.judge_model,
           "judge_engine": "alpaca_eval" if package else jargs.judge_engine, "judge_base_url": jargs.judge_base_url}
    return rec | ({"annotator": jargs.alpaca_annotator} if b == "alpaca_eval" else {})


def _score(b, prompts, refs, answers, judgments, name, ref_name, root, eargs, jargs, bargs) -> dict:
    if judgments is None:  # AlpacaEval by the alpaca_eval package's own annotator (e.g. weighted_alpaca_eval_gpt4.1)
        ann = _alpaca_eval_annotate(prompts, refs, answers, name, ref_name, jargs.alpaca_annotator, eargs.seed,
                                    root, jargs.judge_base_url)
        annotator = jargs.alpaca_annotator
    else:
        annotator = f"{jargs.judge_engine}:{jargs.judge_model}"
        if b == "arena_hard":
            return score_arena(prompts, refs, answers, judgments, name, ref_name, root, annotator, bargs,
                               eargs.seed) | judge_record(b, jargs)
        ann = alpaca_annotations(prompts, refs, answers, judgments, name, ref_name, annotator)
    from .alpaca import length_controlled_winrate, load_gamed

    atomic_write_text(root / "annotations.json", json.dumps(ann, indent=1, default=str))
    # The gamed rows (and instruction difficulties) belong to the 805 AlpacaEval 2 instructions and
    # the gpt4_turbo references: only then does alpaca_eval's own LC GLM apply.
    full_ae2 = bargs.reference == "hub" and bargs.alpaca_prompts == "hub" and not bargs.alpaca_limit
    metrics = length_controlled_winrate(ann, gamed=load_gamed() if full_ae2 else None)
    return {**{k: v for k, v in metrics.items() if not isinstance(v, dict)}, "judge": annotator,
            **judge_record(b, jargs)}


def _alpaca_eval_annotate(prompts, refs, answers, name, ref_name, annotators_config: str, seed: int,
                          root: Path, base_url: str | None = None) -> list[dict]:
    """AlpacaEval's judge as alpaca_eval runs it (e.g. weighted_alpaca_eval_gpt4.1: gpt-4.1's probability of each
    identifier), through the alpaca_eval package, from the config file written under root (judges.py: configs newer
    than the package, judge_base_url). Its cache of finished calls lives in root too (not in site-packages), so an
    interrupted run pays for no call twice."""
    from . import import_alpaca_eval

    config = write_alpaca_annotator(annotators_config, root / "alpaca_eval_annotators", base_url)
    annotator = import_alpaca_eval("alpaca_eval.annotators").PairwiseAnnotator(
        annotators_config=str(config), seed=seed, caching_path=str(root / "alpaca_eval_annotator_cache.json"))
    out1 = [{"instruction": p["instruction"], "output": refs[p["id"]], "generator": ref_name} for p in prompts]
    out2 = [{"instruction": p["instruction"], "output": answers[p["id"]]["response"], "generator": name}
            for p in prompts]
    ann = annotator.annotate_head2head(outputs_1=out1, outputs_2=out2, is_ordered=True)
    for a, p in zip(ann, prompts):
        a["index"] = p["index"]
    print(f"alpaca_eval annotator {annotators_config}: {len(ann)} annotations", file=sys.stderr)
    return ann
