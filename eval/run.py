"""Evaluate one model on the configured benchmarks (eval/benchmarks/): answers, references, judgments, scores.

    <output_dir>/<benchmark>/{prompts,answers,judgments}/   dataset directories of each judged benchmark (resumable),
                                                            beside its own files (see its module)
    <output_dir>/lm_eval/results_<date>.json                lm-eval's results and samples (its tracker's files)
    <output_dir>/results.json                               every score, written last

The judged benchmarks go through each phase together, so that every model loads once: the model's answers (through
the same stage as MAGPIE's step 2, `core.answer`, with each benchmark's decoding), the references, the judgments
(one judge), then each one's score. Every step resumes: a killed evaluation started again redoes only the missing
shards, and `results.json` appears only when every benchmark has its score.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

from core import procs, shards, store
from core.answer import generate_responses, responses_config
from core.config import ModelArgs, ResponseArgs
from core.engines import LazyEngine
from core.layout import RunLayout
from core.store import atomic_write_text

from . import cost
from .benchmarks import HeadToHead, get_benchmark
from .config import BenchArgs, EvalArgs, HarnessArgs, JudgeArgs
from .judges import PairwiseJudge, check_judges

CONFIG_FILE = "eval_config.yaml"  # every key of a run beside its results, written once its checks pass: `rejudge` reads it


def write_config(out: Path, *parts) -> None:
    """Every key of the evaluation (no secret is a key: keys and tokens are environment variables)."""
    from dataclasses import asdict

    import yaml

    keys = {k: v for p in parts for k, v in asdict(p).items() if k != "yes"}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(keys, sort_keys=False))


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
        filt = store.DatasetDir(RunLayout(dp.parent).filtered).manifest() or {}
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
    done = all(_answer_dirs(margs, p, root, batch_size=batch_size, **dec)[3] for p, root, dec in work)
    return procs.place(answer_sets, margs, work, batch_size, engines=(margs.engine,), done=done)


# ---------------------------------------------------------------------------------------------
# Judgments

def judge_shard(judge, items: list[dict]) -> tuple[list[dict], dict]:
    """One shard of judgments: the shard function (core.shards) whose engine is the judge."""
    # Identical answers are a tie without asking (alpaca_eval does the same): in the tiny
    # profile the reference model answering itself would otherwise be judged on noise.
    asked = [it for it in items if it["answer_a"] != it["answer_b"]]
    stats = (getattr(judge.engine, "stats", None) or {}) if asked else {}
    before = (stats.get("prompt_tokens", 0), stats.get("generated_tokens", 0))
    verdicts = iter(judge.judge(asked))
    # what the judge used, from its server's `usage` (or the local engine's counts): results.json's judge_usage
    used = {"judge_calls": len(asked), "judge_input_tokens": stats.get("prompt_tokens", 0) - before[0],
            "judge_output_tokens": stats.get("generated_tokens", 0) - before[1]}
    rows, unparsed = [], 0
    for it in items:
        identical = it["answer_a"] == it["answer_b"]
        v = {"judgment": None, "verdict": None} if identical else next(verdicts)
        unparsed += v["verdict"] is None and not identical
        rows.append({"id": it["id"], "game": it["game"], "swapped": it["swapped"], "judgment": v["judgment"],
                     "verdict": None if v["verdict"] is None else str(v["verdict"]), "identical": identical})
    return rows, {"judgments": len(rows), "unparsed": unparsed, **used}


def judge_set(judge, bench: str, items: list[dict], root: Path, config: dict, batch_size: int) -> list[dict]:
    """The judgments of `items` -> root/judgments, shard by shard (a shard: batch_size items in order)."""
    jdir = store.DatasetDir(root / "judgments")

    def prepare():
        units = [(k, items[i:i + batch_size], len(items[i:i + batch_size]))
                 for k, i in enumerate(range(0, len(items), batch_size))]
        return shards.ShardWork(str(jdir.path), judge_shard), units, {"judge": judge.info()}

    # The batch size fixes which items each shard holds: it is part of what a resumed run must match.
    keys = ("judgments", "unparsed", "judge_calls", "judge_input_tokens", "judge_output_tokens")
    shards.write_stage(jdir, "judgments", {**config, "batch_size": batch_size}, prepare,
                       lambda t: {k: t.get(k, 0) for k in keys}, judge, desc=f"judge {bench}", unit="judgment")
    return jdir.records()


def make_judge(jargs: JudgeArgs, bench: str, engine):
    """The pairwise judge of `bench`; `engine` the judge's engine, a LazyEngine that loads on the first judgment
    (None: for its info() only)."""
    role = jargs.role()
    return PairwiseJudge(engine or (lambda: None), get_benchmark(bench), jargs.arena_judge_max_tokens,
                         prefill=jargs.judge_prefill, prompt_file=jargs.arena_judge_prompt_file,
                         top_logprobs=jargs.alpaca_top_logprobs, names=(role.engine, role.model))


def _judged(root: Path, config: dict, batch_size: int) -> bool:
    return store.DatasetDir(root / "judgments").reusable({**config, "batch_size": batch_size}) is not None


def judge_sets(jargs: JudgeArgs, work: list[tuple[str, list, Path, dict]]) -> list[list[dict]]:
    """The judgments of every (benchmark, items, root, config): one judge engine, built only if some are missing."""
    with LazyEngine(jargs.role()) as engine:
        return [judge_set(make_judge(jargs, b, engine), b, items, root, config, jargs.judge_batch_size)
                for b, items, root, config in work]


# ---------------------------------------------------------------------------------------------
# The evaluation

def evaluate(margs: ModelArgs, eargs: EvalArgs, jargs: JudgeArgs, bargs: BenchArgs, hargs: HarnessArgs,
             log=lambda *_a, **_k: None) -> dict:
    t0 = time.perf_counter()
    out = Path(eargs.output_dir)
    margs = replace(margs, model=trained_model(margs.model))
    name = eargs.model_name or default_name(margs.model)
    result = {"model": margs.model, "model_name": name, "profile": eargs.profile,
              "dataset": detect_dataset(margs.model), "row": eargs.row, "benchmarks": {}}
    if eargs.rejudged_from:
        result["rejudged_from"] = eargs.rejudged_from
    benches = [get_benchmark(b) for b in eargs.benchmarks]
    judged = [b for b in benches if b.judged]
    check_judges(jargs, judged, probe=False)  # a retired judge, no key: one line before anything is read or sent
    sets = [b.prompt_set(bargs) for b in judged]
    if bargs.reference == "hub":
        missing = [b.name for b, (_, refs) in zip(judged, sets) if refs is None and b.needs_reference]
        if missing:
            raise ValueError(f"{', '.join(missing)}: the prompt file has no reference outputs; "
                             "set reference: generate with a reference_model")
    # Before any answer is generated: what the judges will cost (asking for --yes above judge_max_usd), then
    # whether they can judge at all (retired, no key, refused: one line, one 1-token request). Finding out after
    # hours of generation would waste them.
    counters: dict = {}  # the judges' token counters, loaded once
    _check_cost(cost_before_answers(margs, eargs, jargs, bargs, sets, counters), jargs, eargs, "")
    check_judges(jargs, judged)
    write_config(out, margs, eargs, jargs, bargs, hargs)

    # 1. The model's answers: one engine for every set, loaded only if some answers are missing (in a process
    # of its own where the model needs one: it is gone before the reference model and the judge load).
    answers = answers_in_own_process(margs, [(prompts, out / b.name, b.decoding(bargs))
                                             for b, (prompts, _) in zip(judged, sets)], bargs.answer_batch_size)

    # 2. References: the benchmark's own, or a local model's answers shared by every evaluated model; none for a
    # benchmark whose judge grades each answer alone (needs_reference False: WildBench).
    paired = [(b, ps) for b, ps in zip(judged, sets) if b.needs_reference]
    if bargs.reference == "hub":
        found = iter([(r, b.hub_reference(bargs, prompts)) for b, (prompts, r) in paired])
    else:
        from dataclasses import asdict

        rmargs = ModelArgs(**asdict(bargs.reference_role(margs.role())))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", rmargs.model).strip("_")
        recs = answers_in_own_process(rmargs, [(prompts, Path(bargs.references_dir) / b.references_folder(bargs) /
                                                slug, b.decoding(bargs)) for b, (prompts, _) in paired],
                                      bargs.answer_batch_size) if paired else []
        found = iter([({i: x["response"] for i, x in r.items()}, default_name(rmargs.model)) for r in recs])
    refs = [next(found) if b.needs_reference else ({}, None) for b in judged]
    heads = [HeadToHead(prompts, a, r, name, ref_name, out / b.name)
             for b, (prompts, _), a, (r, ref_name) in zip(judged, sets, answers, refs)]

    # The estimate again, now on the answers themselves: asked for --yes here where they made it cross the line.
    estimates = {e.benchmark: e for e in cost.estimate(jargs, judged, heads, eargs.seed, counters=counters)} \
        if judged else {}
    _check_cost(list(estimates.values()), jargs, eargs, " (the answers are kept: the rerun judges them)")

    # 3. Judgments (one judge model for every benchmark judged here, in a process of its own where it needs one).
    work = [(b.name, b.items(h, eargs.seed), h.root, {
        "answers": store.DatasetDir(h.root / "answers").manifest()["config_hash"],
        "references": store.config_hash({"refs": h.refs}), "seed": eargs.seed,
        "judge": make_judge(jargs, b.name, None).info()}) for b, h in zip(judged, heads) if b.annotator(jargs) is None]
    done = all(_judged(root, config, jargs.judge_batch_size) for _, _, root, config in work)
    judgments = dict(zip([w[0] for w in work], procs.place(judge_sets, jargs, work, engines=(jargs.judge_engine,),
                                                           done=done)))

    # 4. Scores; then the benchmarks that run by themselves (lm-eval's harness).
    for b, h in zip(judged, heads):
        res = b.score(h, judgments.get(b.name), eargs, jargs, bargs)
        # Length is what AlpacaEval's LC corrects for: show it beside every score.
        chars = round(sum(len(r["response"]) for r in h.answers.values()) / max(len(h.answers), 1), 1)
        res.setdefault("version", b.version(bargs))
        res.update(prompts=len(h.prompts), reference=h.reference, avg_answer_chars=chars,
                   judge_estimate=cost.as_record(estimates[b.name]), judge_usage=_usage(b, h, jargs))
        result["benchmarks"][b.name] = res
        log(b.log_values(res) | _judge_labels(b.name, res))
    for b in benches:
        if not b.judged:
            result["benchmarks"][b.name] = res = b.run(margs, eargs, hargs)
            log(b.log_values(res))

    result["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str))
    return result


# ---------------------------------------------------------------------------------------------
# What the judges cost

def cost_before_answers(margs, eargs, jargs, bargs, sets=None, counters=None) -> list:
    """The judges' cost estimate with stand-ins for the answers: each as long as its reference (the benchmark's
    own), or at its max_tokens where the references are generated too. `sets`: the judged benchmarks' prompt sets
    where they are loaded already."""
    judged = [b for b in map(get_benchmark, eargs.benchmarks) if b.judged]
    sets = sets or [b.prompt_set(bargs) for b in judged]
    name, out = eargs.model_name or default_name(margs.model), Path(eargs.output_dir)
    heads, lengths = [], []
    for b, (prompts, refs) in zip(judged, sets):
        refs = refs if bargs.reference == "hub" else None
        texts = refs or {p["id"]: "" for p in prompts}
        heads.append(HeadToHead(prompts, {i: {"response": t} for i, t in texts.items()}, texts, name, "", out))
        lengths.append(None if refs else b.decoding(bargs)["max_tokens"])
    return cost.estimate(jargs, judged, heads, eargs.seed, known_answers=False, answer_tokens=lengths,
                         counters=counters)


def _check_cost(estimates: list, jargs: JudgeArgs, eargs: EvalArgs, after: str) -> None:
    """Print the estimate; refuse (one line) to go on above judge_max_usd without --yes."""
    if not estimates:
        return
    print(cost.summary(estimates), flush=True)
    usd = cost.total_usd(estimates)
    if usd > jargs.judge_max_usd and not eargs.yes:
        raise ValueError(f"the judges are estimated to cost ${usd:,.2f}, more than judge_max_usd ${jargs.judge_max_usd:,.2f}"
                         f"{after}; run again with --yes to pay it, or judge with a cheaper judge (--judge gpt-5-nano) "
                         "or a local one")


def _usage(b, h: HeadToHead, jargs: JudgeArgs) -> dict:
    """What judging used: the judgments' counts (judged here), or alpaca_eval's own price per annotation."""
    if b.annotator(jargs) is not None:
        ann = json.loads((h.root / "annotations.json").read_text())
        paid = [a.get("price_per_example") for a in ann if isinstance(a.get("price_per_example"), (int, float))]
        return {"calls": len(ann), "usd": round(sum(paid), 4) if paid else None, "by": "alpaca_eval"}
    return cost.usage(store.DatasetDir(h.root / "judgments").manifest().get("counts", {}))


def _judge_labels(name: str, res: dict) -> dict:
    """Which judge and benchmark version made a benchmark's numbers, logged beside them (W&B shows the strings)."""
    return {f"{name}/{k}": res[k] for k in ("judge_name", "judge_model", "version") if res.get(k) is not None}
