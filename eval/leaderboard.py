"""Arena-Hard leaderboard: the models of several evaluations scored together, as arena-hard-auto's show_result.py
scores every judgment file of its data folder in one call (`python -m eval arena`).

Scoring together matters for style control: its covariates are centred on the battles scored at once, so only
a joint fit compares the models' styles (eval/arena.py). Each folder holds what `eval run` wrote under
arena_hard/ (eval/benchmarks/arena_hard.py); the runs must share the judge and the baseline.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from core import store
from core.store import atomic_write_text

from .arena import NAME, arena_hard_score, format_score
from .formats import csv_text, md_table

_CSV = ("category", "model", "score", "ci_lower", "ci_upper", "ci_minus", "ci_plus", "avg_tokens", "n_judgments",
        "n_unparsed", "n_battles", "baseline", "version", "control", "control_fit", "interval", "run")


def games(prompts, judgments, model: str, baselines: dict[str, str]) -> list[dict]:
    """arena_hard_score's judgments from one evaluation's records; `baselines`: {question category or "": baseline}.
    Identical answers were not sent to the judge: they count as the tie it would have to give."""
    category = {p["id"]: p.get("category") or "" for p in prompts}
    return [{"question_id": j["id"], "model": model, "baseline": baselines[category[j["id"]]], "game": j["game"],
             "verdict": "A=B" if j["identical"] else j["verdict"], "category": category[j["id"]]}
            for j in judgments]


def style(meta: dict) -> dict:
    """Mean length and markdown counts of one model's answers (show_result's "average #tokens")."""
    rows = list(meta.values())
    n = max(len(rows), 1)
    out = {"answers": len(rows), "avg_tokens": round(sum(m["token_len"] for m in rows) / n, 2)}
    for key, counts in (("avg_headers", "header_count"), ("avg_list_items", "list_count"), ("avg_bold", "bold_count")):
        out[key] = round(sum(sum(m[counts].values()) for m in rows) / n, 2)
    return {**out, "tokenizer": rows[0].get("tokenizer") if rows else None}


def score(judgments: list[dict], meta: dict, version: str = "v0.1", control_features=(), num_rounds: int = 100,
          seed: int = 0, control_fit: str = "show_result") -> pd.DataFrame:
    """Every model's rows: one per category in the questions' order for v2.0, one for v0.1; `avg_tokens` added.
    control_fit: style control's fit, show_result (its own L-BFGS) or converged (eval/arena.py)."""
    df = pd.DataFrame(judgments)
    tables = []
    for category in dict.fromkeys(df["category"]) if version == "v2.0" else [None]:
        rows = df if category is None else df[df["category"] == category]
        baselines = sorted(set(rows["baseline"]))
        if len(baselines) > 1:  # v2.0's hub questions: hard_prompt and creative_writing have their own
            raise ValueError(f"the judgments compare against several baselines ({', '.join(baselines)}); v0.1 has "
                             "one: score them with --version v2.0 (one leaderboard per category)")
        t = arena_hard_score(df, baseline=baselines[0], num_rounds=num_rounds, seed=seed, version=version,
                             category=category, control_features=list(control_features), metadata=meta,
                             control_fit=control_fit)
        t["avg_tokens"] = [_avg_tokens(meta, m, rows.loc[rows["model"] == m, "question_id"]) for m in t["model"]]
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def _avg_tokens(meta: dict, model: str, qids) -> float:
    toks = [meta[model][q]["token_len"] for q in set(qids) if q in meta.get(model, {})]
    return round(sum(toks) / len(toks), 1) if toks else math.nan


# ---------------------------------------------------------------------------------------------
# reading evaluations


def read_run(path) -> dict:
    """One evaluation's Arena-Hard outputs; FileNotFoundError or ValueError naming what is missing."""
    p = Path(path)
    root = p if p.name == NAME else p / NAME
    again = "run `python -m eval run` for it (a finished evaluation started again loads no model and writes it)"
    for need in ("scores.json", "answer_metadata.json", "judgments", "prompts"):
        if not (root / need).exists():
            raise FileNotFoundError(f"{p}: no Arena-Hard {need} under {root}; {again}")
    s = json.loads((root / "scores.json").read_text())
    if "baselines" not in s:
        raise ValueError(f"{root / 'scores.json'} was written before leaderboards existed; {again}")
    jdir = store.DatasetDir(root / "judgments")
    try:
        judge = jdir.require_complete().get("judge")
    except store.IncompleteInput:
        raise ValueError(f"{p}: its Arena-Hard judgments are unfinished; {again}") from None
    return {"path": str(p), "model": s["model"], "version": s["version"], "baselines": s["baselines"],
            "judge": judge, "judgments": jdir.records(), "prompts": store.DatasetDir(root / "prompts").records(),
            "metadata": json.loads((root / "answer_metadata.json").read_text())}


def check_shared(runs: list[dict]) -> None:
    """One judge, one baseline per category and the same baseline answers across runs; a ValueError of one
    line that says which differs. (Answers are compared through their metadata: length and markdown counts.)"""
    first = runs[0]
    seen = {}
    for r in runs:
        if r["model"] in seen:
            raise ValueError(f"{seen[r['model']]} and {r['path']} both hold model {r['model']!r}; a leaderboard "
                             "lists each model once (give one of them another --model_name when evaluating)")
        seen[r["model"]] = r["path"]
        if r["judge"] != first["judge"]:
            a, b = r["judge"] or {}, first["judge"] or {}
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            diff = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:2])
            raise ValueError(f"{r['path']} and {first['path']} have different judges ({diff}); Arena-Hard scores "
                             "models judged by one judge")
        for cat in set(r["baselines"]) & set(first["baselines"]):
            if r["baselines"][cat] != first["baselines"][cat]:
                raise ValueError(f"{r['path']} and {first['path']} have different baselines ("
                                 f"{r['baselines'][cat]!r} vs {first['baselines'][cat]!r}"
                                 f"{f' in category {cat}' if cat else ''}); Arena-Hard scores against one baseline")
    for r in runs[1:]:
        for name in set(r["baselines"].values()):
            mine, theirs = r["metadata"].get(name, {}), first["metadata"].get(name, {})
            diff = next((q for q in mine if q in theirs and mine[q] != theirs[q]), None)
            if diff is not None:
                raise ValueError(f"{r['path']} and {first['path']} judged against different answers of the baseline "
                                 f"{name!r} (question {diff}); Arena-Hard scores against one set of baseline answers")


def leaderboard(paths, version: str | None = None, control_features=(), num_rounds: int = 100, seed: int = 0,
                control_fit: str = "show_result"):
    """(rows DataFrame with a `run` column and the baselines' rows at 50.0, info dict)."""
    runs = [read_run(p) for p in paths]
    check_shared(runs)
    versions = sorted({r["version"] for r in runs})
    if version is None and len(versions) > 1:
        raise ValueError(f"the runs were scored as {' and '.join(versions)}; choose one with --version")
    version = version or versions[0]
    baselines = {c: b for r in runs for c, b in r["baselines"].items()}
    meta, judgments, where = {}, [], {}
    for r in runs:
        for name, answers in r["metadata"].items():
            meta.setdefault(name, {}).update(answers)
        where[r["model"]] = r["path"]
        if r["model"] in baselines.values():  # the baseline evaluated against itself: listed at 50.0 below
            continue
        judgments += games(r["prompts"], r["judgments"], r["model"], r["baselines"])
    if not judgments:
        raise ValueError("every run given is the baseline itself; add the evaluation of another model")
    table = score(judgments, meta, version, control_features, num_rounds, seed, control_fit)
    table["run"] = table["model"].map(where)
    blocks = []
    for category, t in _blocks(table):  # category None for v0.1
        name = t["baseline"].iloc[0]
        qids = [j["question_id"] for j in judgments if category is None or j["category"] == category]
        # show_result lists the baseline at 50.0 (-0.0 / +0.0)
        base = {"model": name, "score": 50.0, "ci_lower": 50.0, "ci_upper": 50.0, "ci_minus": 0.0, "ci_plus": 0.0,
                "category": category, "baseline": name, "version": version, "control": t["control"].iloc[0],
                "control_fit": t["control_fit"].iloc[0],
                "interval": t["interval"].iloc[0], "note": "the baseline", "avg_tokens": _avg_tokens(meta, name, qids),
                "run": where.get(name)}
        blocks.append(pd.concat([t, pd.DataFrame([base])]).sort_values("score", ascending=False, na_position="last",
                                                                       kind="stable"))
    rows = pd.concat(blocks, ignore_index=True)
    info = {"version": version, "control": list(control_features),
            "control_fit": control_fit if control_features else None, "judge": runs[0]["judge"],
            "baselines": baselines, "runs": [r["path"] for r in runs], "num_rounds": num_rounds, "seed": seed}
    return rows, info


# ---------------------------------------------------------------------------------------------
# output


def _blocks(rows: pd.DataFrame):
    for category, t in rows.groupby("category", dropna=False, sort=False):
        yield (None if pd.isna(category) else category), t


def _title(info: dict, category, t) -> str:
    judge = info["judge"] or {}
    ctl = f", style control: {' '.join(info['control'])} ({info.get('control_fit')} fit)" if info["control"] else ""
    cat = f", {category}" if category else ""
    return (f"Arena-Hard {info['version']}{cat} vs {t['baseline'].iloc[0]}, judge "
            f"{judge.get('judge_engine')}:{judge.get('judge_model')}{ctl}")


def text(rows: pd.DataFrame, info: dict) -> str:
    """show_result's console table: model, score, CI, average #tokens."""
    out = []
    for category, t in _blocks(rows):
        out.append(f"##### {_title(info, category, t)} #####")
        width = max(map(len, t["model"]))
        for _, r in t.iterrows():
            ci = format_score(r).partition(" ")[2] or "n/a"
            out.append(f"{r['model']:<{width}} | score: {r['score']:5.1f} | {r['interval']:.0%} CI: {ci:<14} | "
                       f"average #tokens: {_num(r['avg_tokens'])}")
    return "\n".join(out)


def _num(x) -> str:
    return "–" if pd.isna(x) else f"{x:.0f}"


def markdown(rows: pd.DataFrame, info: dict) -> str:
    out = []
    for category, t in _blocks(rows):
        out += [f"### {_title(info, category, t)}", "", *md_table(
            ["model", "score", "CI", "average #tokens", "battles"],
            [[r["model"], format_score(r), f"{r['interval']:.0%}", _num(r["avg_tokens"]), _num(r.get("n_battles"))]
             for _, r in t.iterrows()]), ""]
    if info["control"]:
        fit = ("show_result.py's own (50 float32 L-BFGS steps per round)" if info.get("control_fit") == "show_result"
               else "converged to the maximum-likelihood one, not show_result.py's 50 L-BFGS steps")
        out.append("Style control (arena-hard-auto show_result.py --control-features): the scores are those of a "
                   "Bradley-Terry fit with the style covariates of the models listed here, scored together; "
                   f"the fit is {fit}.")
    return "\n".join(out) + "\n"


def records(rows: pd.DataFrame) -> list[dict]:
    """Plain rows: None where a value is missing (the baseline has no battles), counts as integers."""
    def plain(k, v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return int(v) if k.startswith("n_") and isinstance(v, float) else v

    return [{k: plain(k, v) for k, v in r.items()} for r in rows.to_dict("records")]


def write(rows: pd.DataFrame, info: dict, out_dir) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leaderboard.md", markdown(rows, info))
    atomic_write_text(out / "leaderboard.csv", csv_text(records(rows), _CSV))
    atomic_write_text(out / "leaderboard.json", json.dumps({**info, "rows": records(rows)}, indent=1))
    return {k: str(out / f"leaderboard.{k}") for k in ("md", "csv", "json")}
