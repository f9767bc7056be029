"""Paper Table 1, reproduced: the paper's numbers (eval/data/paper_table1.yaml) beside ours.

`python -m eval table` reads each evaluation's `results.json`, places it on its paper row (the `row` it was given,
else the SFT set it was trained on, else its model id), and writes table.md, table.csv and table.png (plus a W&B
table when W&B is on). Rows keep the paper's order; a measured model that matches no paper row is listed after them.
Deltas are ours minus the paper's. The paper's numbers are gpt-4-1106-preview's judgments; a delta between them and
ours from another judge (the default is gpt-4.1: OpenAI shut the paper's down on 2026-03-26) is marked †, since it
compares judges as well as models.

Numbers the paper does not report (WildBench's WB-Score, IFEval, IFBench: each benchmark's `beyond`) are never Table 1
columns: table.md prints them in a section of their own, "Beyond the paper", beside the published numbers of
eval/data/reference_scores.yaml (each with its source, date and judge).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from .benchmarks import BENCHMARKS
from .formats import csv_text, md_table

PAPER = Path(__file__).resolve().parent / "data" / "paper_table1.yaml"
REFERENCES = Path(__file__).resolve().parent / "data" / "reference_scores.yaml"
# The "Beyond the paper" columns (key in reference_scores.yaml, title), each filled by the benchmark that names it.
BEYOND = tuple(m for b in BENCHMARKS.values() for m in b.beyond)
# The Table 1 columns (key in paper_table1.yaml, title), each filled by the benchmark that names it in its `table`.
METRICS = tuple(m for b in BENCHMARKS.values() for m in b.table)
BENCH_OF = {key: b.name for b in BENCHMARKS.values() for key, _ in b.table}
METRIC_COLUMNS = [f"{w}_{k}" for k, _ in METRICS for w in ("paper", "ours", "delta")]
JUDGED = [b for b in BENCHMARKS.values() if b.judged]  # whose judges a line names
# Paper section 4.1: GPT-4-Turbo-1106 judged both benchmarks (AlpacaEval 2: weighted_alpaca_eval_gpt4_turbo).
PAPER_JUDGE = "gpt-4-1106-preview"
ACROSS_JUDGES = "†"


def paper_rows() -> tuple[list[dict], str]:
    data = yaml.safe_load(PAPER.read_text())
    return data["rows"], data["source"]


def load_results(paths) -> list[dict]:
    """results.json files, or folders holding one; a folder without one is an error that says why."""
    out = []
    for p in map(Path, paths):
        f = p / "results.json" if p.is_dir() else p
        if not f.exists():
            raise FileNotFoundError(f"{p} has no results.json: run `python -m eval run` for it first "
                                    "(an interrupted evaluation writes results.json only when it finishes)")
        r = json.loads(f.read_text())
        r["_path"] = str(f)
        out.append(r)
    return out


def row_of(result: dict, rows: list[dict]) -> str | None:
    ids = {r["id"]: r["id"] for r in rows}
    ids.update({a: r["id"] for r in rows for a in r.get("aliases", [])})
    return next((ids[k] for k in (result.get("row"), result.get("dataset"), result.get("model")) if k in ids), None)


def judge_of(bench: dict) -> str | None:
    """The judge model of one benchmark's result; for results written before `judge_model` was, read from `judge`
    ("<engine>:<model>", or an alpaca_eval annotator config)."""
    judge = bench.get("judge_model") or bench.get("judge")
    if not judge or bench.get("judge_model"):
        return judge
    if ":" in judge:
        return judge.split(":", 1)[1]
    from .judges import alpaca_annotator_model

    try:
        return alpaca_annotator_model(judge) or judge
    except (ValueError, ImportError):
        return judge


def measured(result: dict) -> dict:
    """The Table 1 numbers (and their error bars) of one results.json, each benchmark's, and their judges."""
    out: dict = {"judges": {}}
    for bench in BENCHMARKS.values():
        res = result.get("benchmarks", {}).get(bench.name, {})
        res = res if bench.comparable(res) else {}  # not what the paper measured: no delta to it
        out.update(bench.measured(res))
        if bench.judged:
            out["judges"][bench.name] = judge_of(res)
    return out


def beyond(result: dict) -> dict:
    """One results.json's numbers beyond the paper ({key: value}) and the judge of each judged one."""
    values, judges = {}, {}
    for bench in BENCHMARKS.values():
        res = result.get("benchmarks", {}).get(bench.name)
        if res:
            got = bench.beyond_values(res)
            values.update(got)
            judges.update({k: judge_of(res) for k in got if bench.judged})
    return {"values": values, "judges": judges}


def build(results: list[dict], only_measured: bool = False) -> list[dict]:
    """One dict per table line: paper numbers, ours, deltas."""
    rows, _ = paper_rows()
    placed: dict[str, list[dict]] = {}
    extra = []
    for r in results:
        rid = row_of(r, rows)
        (placed.setdefault(rid, []) if rid else extra).append(r)
    lines = [_line(row, r) for row in rows if row["id"] in placed or not only_measured
             for r in placed.get(row["id"], [None])]
    return lines + [_line(None, r) for r in extra]


def _line(row: dict | None, result: dict | None) -> dict:
    paper, ours = row or {}, measured(result) if result else {}
    line = {"id": paper.get("id"), "label": row["label"] if row else result["model_name"],
            "size": paper.get("size", ""), "group": paper.get("group", "") if row else "measured",
            "measured_model": result["model_name"] if result else "",
            "profile": result.get("profile") if result else "", "paper_judge": PAPER_JUDGE if row else None}
    judges = ours.get("judges", {})
    line.update({f"ours_judge_{b.name}": judges.get(b.name) for b in JUDGED}, ours_annotator=ours.get("annotator"))
    for key, _ in METRICS:
        p, mine = paper.get(key), ours.get(key)
        delta = mine - p if _num(mine) and _num(p) else None
        judge = judges.get(BENCH_OF[key])
        line.update({f"paper_{key}": p, f"ours_{key}": mine, f"delta_{key}": delta,
                     f"across_judges_{key}": delta is not None and judge is not None and judge != PAPER_JUDGE})
    return {**line, "paper_sd": paper.get("sd"), "ours_se": ours.get("se"), "ours_arena_ci": ours.get("arena_ci"),
            "lm_eval": ours.get("lm_eval", {}), "beyond": beyond(result) if result else {"values": {}, "judges": {}}}


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def _f(x, signed=False) -> str:
    return format(x, "+.2f" if signed else ".2f") if _num(x) else "–"


def _delta(ln: dict, key: str) -> str:
    return _f(ln[f"delta_{key}"], True) + (ACROSS_JUDGES if ln[f"across_judges_{key}"] else "")


def _judges(ln: dict) -> str:
    """The one judge of a line's benchmarks, or each benchmark's where they differ."""
    judges = [(b.label, ln[f"ours_judge_{b.name}"]) for b in JUDGED]
    given = {j for _, j in judges if j}
    return ", ".join(f"{label} {j}" for label, j in judges if j) if len(given) > 1 else next(iter(given), "–")


def _arena(x, ci) -> str:
    if not _num(x):
        return "–"
    lo, hi = ci or (None, None)
    return f"{x:.1f} ({lo - x:+.1f}/{hi - x:+.1f})" if _num(lo) and _num(hi) else f"{x:.1f}"


def markdown(lines: list[dict]) -> str:
    rows, source = paper_rows()
    head = ["Model", "Size", "Measured", "Judge ours", "LC paper", "LC ours", "Δ LC", "WR paper", "WR ours", "Δ WR",
            "SD paper", "SE ours", "Arena paper", "Arena ours (95% CI)", "Δ Arena"]

    def cells(ln):
        ae = [x for k in ("lc", "wr") for x in (_f(ln[f"paper_{k}"]), _f(ln[f"ours_{k}"]), _delta(ln, k))]
        return [ln["label"], ln["size"], ln["measured_model"] or "–", _judges(ln) if ln["measured_model"] else "–",
                *ae, _f(ln["paper_sd"]), _f(ln["ours_se"]), _arena(ln["paper_arena"], None),
                _arena(ln["ours_arena"], ln["ours_arena_ci"]), _delta(ln, "arena")]

    out = md_table(head, [cells(ln) for ln in lines])
    notes = [(f"Paper numbers: {source}, judged by {PAPER_JUDGE} (AlpacaEval 2: weighted_alpaca_eval_gpt4_turbo). "
              "AE2 = AlpacaEval 2 (LC: length-controlled win rate, WR: win rate, "
              "both % against GPT-4-Turbo; SD as the paper reports it, SE: our standard error); Arena-Hard: "
              "% win rate against GPT-4-0314 with its bootstrap 95% CI. Δ = ours − paper.")]
    if any(ln[f"across_judges_{k}"] for ln in lines for k in BENCH_OF):
        notes.append(f"{ACROSS_JUDGES} ours were judged by another model than the paper's {PAPER_JUDGE} (which OpenAI "
                     "shut down on 2026-03-26; see Judge ours): the delta compares different judges as well as "
                     "different models.")
    if any(ln["profile"] == "tiny" for ln in lines):
        notes.append("**tiny profile**: the measured models are SmolLM2-135M fine-tunes, judged by SmolLM2-135M "
                     "against SmolLM2-135M's own answers on the repo's small prompt sets (24 AlpacaEval-style, "
                     "16 Arena-style prompts). These numbers prove the pipeline runs end to end; they do not test "
                     "the paper's claims, and the deltas are not comparable.")
    lm = [ln for ln in lines if ln["lm_eval"]]
    if lm:
        tasks = sorted({t for ln in lm for t in ln["lm_eval"]})
        body = [[ln["measured_model"], *(_lm_cell(ln["lm_eval"].get(t, {})) for t in tasks)] for ln in lm]
        for row in rows:  # the paper's downstream numbers (Table 3), where it has them for these tasks
            paper = row.get("downstream", {})
            if any(t in paper for t in tasks):
                body.append([f"paper: {row['label']} (Table 3)", *(f"{paper[t]:.2f} %" if t in paper else "–"
                                                                   for t in tasks)])
        out += ["", "lm-eval harness:", "", *md_table(["Model", *tasks], body)]
    out += beyond_section(lines)
    return "\n".join(out + [""] + notes) + "\n"


def beyond_section(lines: list[dict]) -> list[str]:
    """table.md's "Beyond the paper": our numbers that the paper does not report, beside the published ones
    (eval/data/reference_scores.yaml) with their sources; [] where no evaluation measured any."""
    ours = [ln for ln in lines if ln["beyond"]["values"]]
    if not ours:
        return []
    refs = yaml.safe_load(REFERENCES.read_text())["models"]
    keys = [(k, title) for k, title in BEYOND if any(k in ln["beyond"]["values"] for ln in ours)]
    ref_judge = {k: next((m["scores"][k].get("judge") for m in refs if m["scores"].get(k, {}).get("judge")), None)
                 for k, _ in keys}

    def mine(ln, k):
        judge = ln["beyond"]["judges"].get(k)
        other = judge is not None and ref_judge[k] is not None and judge != ref_judge[k]
        return _f(ln["beyond"]["values"].get(k)) + (ACROSS_JUDGES if other and k in ln["beyond"]["values"] else "")

    body = [[f"{ln['measured_model']} (ours)", *(mine(ln, k) for k, _ in keys)] for ln in ours]
    sources = []
    for m in refs:
        scores = {k: m["scores"].get(k) or {} for k, _ in keys}
        if not any(s for s in scores.values()):
            continue
        body.append([f"{m['label']} (published)", *(_f(s.get("value")) for s in scores.values())])
        for (k, title), s in zip(keys, scores.values()):
            if s.get("value") is not None:
                judge = f", judge {s['judge']}" if s.get("judge") else ""
                sources.append(f"- {m['label']}, {title}: {s['source']} ({s['date']}{judge}) {s['url']}")
            elif s:
                sources.append(f"- {m['label']}, {title}: {s.get('note', 'no published number')}")
    notes = []
    if any(ACROSS_JUDGES in c for row in body for c in row):
        ours_judges = sorted({j for ln in ours for j in ln["beyond"]["judges"].values() if j})
        notes.append(f"{ACROSS_JUDGES} judged by {', '.join(ours_judges)}, the published number by another judge: "
                     "they compare judges as well as models.")
    if any(ln["profile"] == "tiny" for ln in ours):
        notes.append("**tiny profile**: ours are SmolLM2-135M runs on the repo's small task sets, judged by "
                     "SmolLM2-135M; they prove the pipeline, not a comparison with the published numbers.")
    head = ["Model", *(title for _, title in keys)]
    return ["", "Beyond the paper (not in MAGPIE's tables; published numbers for reference):", "",
            *md_table(head, body), "", "Published numbers:", *sources, *([""] + notes if notes else [])]


def _lm_cell(metrics: dict) -> str:
    # The first metric that is a plain score (lm-eval names them "acc,none", "exact_match,strict-match", ...).
    for k, v in metrics.items():
        if _num(v) and "stderr" not in k:
            return f"{k.split(',')[0]} {v:.3f}"
    return "–"


def to_csv(lines: list[dict]) -> str:
    return csv_text(lines, ["id", "label", "size", "group", "measured_model", "profile", *METRIC_COLUMNS,
                            "paper_sd", "ours_se", "paper_judge", *(c for b in JUDGED for c in b.judge_columns),
                            *(f"across_judges_{k}" for k, _ in METRICS)])


def plot(lines: list[dict], path: Path) -> Path:
    from core.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 0.45 * len(lines) + 2), sharey=True)
    labels = [ln["label"] + (f"\n[{ln['measured_model']}]" if ln["measured_model"] else "") for ln in lines]
    y = list(range(len(lines)))
    for ax, (key, title) in zip(axes, METRICS):
        paper = [ln[f"paper_{key}"] if _num(ln[f"paper_{key}"]) else 0 for ln in lines]
        ours = [ln[f"ours_{key}"] if _num(ln[f"ours_{key}"]) else 0 for ln in lines]
        ax.barh([i + 0.2 for i in y], paper, height=0.4, label="paper", color="#9db4d0")
        err = None
        if key == "arena":  # the bootstrap 95% CI as error bars
            cis = [ln["ours_arena_ci"] or (None, None) for ln in lines]
            err = [[o - lo if _num(lo) else 0 for o, (lo, _) in zip(ours, cis)],
                   [hi - o if _num(hi) else 0 for o, (_, hi) in zip(ours, cis)]]
        ax.barh([i - 0.2 for i in y], ours, height=0.4, label="ours", color="#d0763a", xerr=err, capsize=2)
        ax.set_title(title + " (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[-1].legend(loc="lower right")
    fig.suptitle("MAGPIE Table 1: paper vs this reproduction")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results_paths, out_dir, only_measured: bool = False, log=None) -> dict:
    """table.md, table.csv and table.png under out_dir; the W&B table through `log` when given."""
    lines = build(load_results(results_paths), only_measured=only_measured)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(lines)
    (out / "table.md").write_text(md)
    (out / "table.csv").write_text(to_csv(lines))
    png = plot(lines, out / "table.png")
    if log is not None:
        try:
            import wandb

            cols = ["label", "measured_model", *METRIC_COLUMNS, "paper_judge", *(f"ours_judge_{b.name}" for b in JUDGED)]
            log({"paper_table": wandb.Table(columns=cols, data=[[ln[c] for c in cols] for ln in lines]),
                 "paper_table_plot": wandb.Image(str(png))})
        except ImportError:
            pass
    return {"rows": len(lines), "measured": sum(bool(ln["measured_model"]) for ln in lines),
            "markdown": str(out / "table.md"), "csv": str(out / "table.csv"), "png": str(png), "text": md}
