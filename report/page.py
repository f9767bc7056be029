"""One static HTML report per run: `python -m report runs/magpie_air` -> runs/magpie_air/report/index.html.

The page is one self-contained file: Plotly's JavaScript and DataTables (the bundle the itables package ships) are
inline, the data is inline JSON, nothing is fetched when it is viewed. It shows, from the run's own files:

- the run: models, pre-query template, sampling cells, every stage's counts, drop reasons and throughput, library
  versions, stand-ins for the paper's models, W&B runs, and which stages are missing;
- the data (every row, streamed: stats.Profile): task category, difficulty, input quality, language and safety
  distributions, reward and min-neighbour-distance histograms, instruction/response lengths, the filter funnel,
  for a steered run the task-category distribution of each steer value (table and chart), and an embedding map
  (a 2-D t-SNE of the instructions, as the paper's Figure 4; with `--compare` other sets on the same map);
- a sample browser: up to `--sample` rows (seeded; the page says how many of how many), searchable, filterable by
  every tag, sortable, each with its whole conversation, its tags and whether the filter kept it or which
  condition dropped it;
- the evaluation: the paper-table rows beside the paper's numbers, the judged pairs of each benchmark with their
  verdicts from the model's side, and the lm-eval scores.

`report/data.json` beside the page holds the same data (what the tests compare between runs).
"""
from __future__ import annotations

import base64
import json
import math
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from core import store
from core.layout import FOLDERS, RunLayout
from core.schema import CATEGORICAL as ORDER
from eval.benchmarks import BENCHMARKS
from eval.table import build
from synth.export import _find_key
from synth.filters import row_fates
from synth.preferences import pair_scores
from synth.stats import Profile, response_lengths
from synth.steering import label as steer_label
from synth.taggers.neighbors import NeighborTagger
from train.data import load_sft_dataset

STAGES = ("instructions", "responses", "multiturn", "tagged", "filtered", "export", "pref_export")  # RunLayout names
CORE = ("instructions", "responses", "tagged", "filtered", "export")  # every synthesis recipe makes these
DATA_STAGES = ("tagged", "multiturn", "responses", "instructions")  # the set the data section describes
CATEGORICAL = ("task_category", "difficulty", "input_quality", "language", "llama_guard_2")
NUMERIC = {"instruct_reward": "reward", "min_neighbor_distance": "min neighbour distance",
           "instruction_length": "instruction length (characters)", "response_length": "response length (characters)"}
SAMPLE_COLUMNS = ("id", "instruction", "task_category", "difficulty", "input_quality", "language", "llama_guard_2",
                  "instruct_reward", "min_neighbor_distance")
_TEMPLATE = Path(__file__).with_name("report.html.j2")


class ReportError(ValueError):
    pass


# -- gathering ------------------------------------------------------------------------------------
def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating,)):
        return _json_safe(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _stages(root: Path) -> tuple[dict, list[str]]:
    """Each stage's manifest summary, and the stages that are not there (or not complete)."""
    out, missing = {}, []
    for key in STAGES:
        s, m = FOLDERS[key], store.DatasetDir(getattr(RunLayout(root), key)).manifest()
        if m is None:
            if s in CORE:  # multi-turn and preference data belong to some recipes only
                missing.append(s)
            continue
        counts = m.get("counts") or {}
        seconds = m.get("seconds_this_run")
        if seconds is None and m.get("finished") and m.get("created"):
            seconds = m["finished"] - m["created"]
        out[s] = {"status": m.get("status"), "model": m.get("model"), "engine": m.get("engine"),
                  "counts": {k: v for k, v in counts.items()  # numbers and the drop reasons; tag stats are charted
                             if isinstance(v, (int, float)) or k == "dropped" and isinstance(v, dict)},
                  "seconds": round(seconds, 1) if seconds else None, "preset": (m.get("config") or {}).get("preset"),
                  "funnel": m.get("funnel")}
        if m.get("status") != "complete":
            missing.append(f"{s} (not complete)")
    return out, missing


def _stand_ins(root: Path) -> list[str]:
    notes = []
    for key in STAGES:
        s, m = FOLDERS[key], store.DatasetDir(getattr(RunLayout(root), key)).manifest() or {}
        for where, v in _find_key(m, "stand_in"):
            line = f"{where.split('.')[-1] or s}: {v}"
            if line not in notes:
                notes.append(line)
        for part in sorted((root / s / "parts").glob("*/manifest.json")) if (root / s / "parts").is_dir() else []:
            for where, v in _find_key(json.loads(part.read_text()), "stand_in"):
                line = f"{part.parent.name}: {v}"
                if line not in notes:
                    notes.append(line)
    return notes


def _run_info(root: Path) -> dict:
    ins = store.DatasetDir(RunLayout(root).instructions).manifest() or {}
    template = (ins.get("template") or {}).get("pre_query_template")
    versions = next((m.get("versions") for s in STAGES
                     if (m := store.DatasetDir(getattr(RunLayout(root), s)).manifest())), {}) or {}
    wandb_runs = sorted(str(p.relative_to(root)) for p in root.glob("**/wandb/offline-run-*"))
    wandb_runs += [json.loads(p.read_text()).get("wandb_run_dir") for p in root.glob("*/train_summary.json")]
    cells = Counter()
    src = next((p for s in ("instructions", "responses") if ((p := getattr(RunLayout(root), s)) / "data").is_dir()),
               None)
    if src is not None:
        for t in store.DatasetDir(src).batches(50_000, ["gen_input_configs"]):
            for c in t.column("gen_input_configs").to_pylist():
                cells[(c or {}).get("temperature"), (c or {}).get("top_p")] += 1
    return {"name": root.name, "path": str(root), "model": ins.get("model"), "engine": ins.get("engine"),
            "pre_query_template": template, "stops": ins.get("stop"),
            "cells": [{"temperature": t, "top_p": p, "rows": n} for (t, p), n in sorted(cells.items(), key=str)],
            "versions": versions, "wandb_runs": [w for w in wandb_runs if w], "stand_ins": _stand_ins(root)}


def _histogram(values: np.ndarray, bins: int = 40) -> dict:
    if len(values) == 0:
        return {"x": [], "y": [], "n": 0}
    counts, edges = np.histogram(values, bins=min(bins, max(1, len(np.unique(values)))))
    return {"x": [float((a + b) / 2) for a, b in zip(edges[:-1], edges[1:])], "y": counts.tolist(),
            "width": float(edges[1] - edges[0]) if len(edges) > 1 else 1.0, "n": int(len(values)),
            "mean": float(values.mean()), "median": float(np.median(values))}


def _distributions(ds: store.DatasetDir) -> dict:
    profile = Profile.of(ds)
    cats = {f: profile.category_counts(f, ORDER.get(f, ()), top=15 if f == "language" else None)
            for f in CATEGORICAL}
    by_steer = profile.by_steer()  # {} unless the set has a `steer` column (synth/steering.py)
    for t in by_steer.values():
        t["labels"] = [steer_label(v) for v in t["values"]]
    return {"rows": profile.rows,
            "categorical": {f: {"labels": [k for k, _ in c], "counts": [v for _, v in c]} for f, c in cats.items()},
            "numeric": {f: _histogram(profile.values(f)) for f in NUMERIC}
            | ({"reasoning_length": _histogram(profile.values("reasoning_length"))}  # a thinking model's answers only
               if len(profile.values("reasoning_length")) else {}),
            "reasoning_unclosed": profile.reasoning_unclosed, "by_steer": by_steer}


def _fates(root: Path, src: store.DatasetDir) -> tuple[dict[int, str], dict | None]:
    """For each row of the tagged set: "kept" or the filter step that dropped it (None without a filter run)."""
    m = store.DatasetDir(RunLayout(root).filtered).manifest()
    if not m or m.get("status") != "complete" or src.path.name != "tagged":
        return {}, None
    cfg = m["config"]
    return row_fates(src.path, cfg["conditions"], cfg.get("cut"), cfg.get("size"), cfg.get("seed", 0)), cfg


def _conversation(r: dict) -> list[dict]:
    msgs = r.get("messages")
    if msgs:
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    turns = [{"role": "user", "content": r.get("instruction") or ""}]
    return turns + ([{"role": "assistant", "content": r["response"]}] if r.get("response") is not None else [])


def _samples(ds: store.DatasetDir, fates: dict[int, str], k: int, seed: int) -> tuple[list[dict], int]:
    """A seeded sample of k rows (all of them below k), in dataset order, for the browser. Only the picked rows
    become dicts: a 1M-row set is read a batch at a time and 5,000 of its rows are converted."""
    n = ds.num_rows()
    picked = np.array(sorted(random.Random(seed).sample(range(n), k)) if n > k else range(n), dtype=np.int64)
    out, start = [], 0
    for batch in ds.batches(10_000):
        lo, hi = np.searchsorted(picked, [start, start + batch.num_rows])
        here = picked[lo:hi]
        if len(here):
            table = batch.take(pa.array(here - start))
            lengths = response_lengths(table)
            for pos, length, r in zip(here.tolist(), lengths.tolist(), table.to_pylist()):
                row = {c: r.get(c) for c in SAMPLE_COLUMNS}
                row.update({c: "untagged" for c in CATEGORICAL if row.get(c) in (None, "")})  # filterable
                row.update(response_length=int(length), instruction_length=len(r.get("instruction") or ""),
                           turns=sum(m["role"] == "user" for m in _conversation(r)),
                           conversation=_conversation(r), filter=fates.get(pos, "no filter run"),
                           tags={t: r.get(t) for t in r if t not in ("messages", "instruction", "response",
                                                                      "gen_input_configs", "gen_response_configs")
                                 and not isinstance(r.get(t), (list, dict))}
                                | {f"steer.{k}": v for k, v in (r.get("steer") or {}).items()})
                out.append(row)
        start += batch.num_rows
    return _json_safe(out), n


def _embedding_map(ds: store.DatasetDir, compare: list[Path], k: int, seed: int) -> dict | None:
    """The instructions of up to k rows of the run (and of each compared set) embedded with the neighbour tagger's
    model and projected to 2-D together (t-SNE, as the paper's Figure 4; PCA below 5 points)."""
    tag = store.DatasetDir(ds.path / "parts" / "min_neighbor_distance").manifest() if ds.path.name == "tagged" else None
    model = ((tag or {}).get("config") or {}).get("kwargs", {}).get("embedding_model")
    if model is None:
        return None
    sets = [("this run", ds.path)] + [(p.name if p.name not in ("export", "data") else p.parent.name, p) for p in compare]
    texts, labels, cats = [], [], []
    for name, path in sets:
        rows = _instructions(path, k, seed)
        texts += [r[0] for r in rows]
        cats += [r[1] for r in rows]
        labels += [name] * len(rows)
    if len(texts) < 3:
        return None
    vecs = NeighborTagger(embedding_model=model).embed(texts)  # the vectors the neighbour tags came from
    if len(texts) >= 5:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, (len(texts) - 1) / 3), init="pca", random_state=seed,
                  max_iter=500).fit_transform(vecs)
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(vecs)
    return {"model": model, "method": "t-SNE" if len(texts) >= 5 else "PCA", "sample_per_set": k,
            "points": [{"x": round(float(x), 3), "y": round(float(y), 3), "set": s, "category": c or "untagged",
                        "text": t[:300]} for (x, y), s, c, t in zip(xy, labels, cats, texts)]}


def _instructions(path: Path, k: int, seed: int) -> list[tuple[str, str | None]]:
    """(instruction, task category) of up to k rows of a dataset directory, an export, or a registered SFT set's
    local copy (its first user turn)."""
    if (path / "manifest.json").exists() or (path / "data").is_dir() and any((path / "data").glob("*.parquet")):
        ds = store.DatasetDir(path)
        cols = set(ds.columns())
        want = [c for c in ("instruction", "messages", "task_category") if c in cols]
        rows = [r for t in ds.batches(50_000, want) for r in t.to_pylist()]
    else:
        rows = load_sft_dataset(str(path)).to_list()
    rows = [((r.get("instruction") or next((m["content"] for m in r.get("messages") or [] if m["role"] == "user"), "")),
             r.get("task_category")) for r in rows]
    rows = [r for r in rows if r[0]]
    return random.Random(seed).sample(rows, k) if len(rows) > k else rows


def _evaluations(root: Path) -> list[dict]:
    out = []
    for d in sorted(p for p in root.glob("eval*") if (p / "results.json").exists()):
        r = json.loads((d / "results.json").read_text())
        out.append({"dir": d.name, "model": r.get("model_name"), "results": r.get("benchmarks", {}),
                    "pairs": {name: b.pairs(d) for name, b in BENCHMARKS.items() if b.judged}, "raw": r})
    if not out:
        return out
    lines = build([e.pop("raw") for e in out], only_measured=True)
    for e in out:
        e["table"] = [ln for ln in lines if ln["measured_model"] == e["model"]]
    return _json_safe(out)


def gather(root, compare=(), sample: int = 5000, map_sample: int = 2000, seed: int = 0) -> dict:
    """Everything the page shows, as JSON-safe data. A run folder without some stages gives what exists."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"run folder {root} does not exist; give a recipe's output_dir, e.g. runs/magpie_air")
    stages, missing = _stages(root)
    if not stages and not list(root.glob("eval*/results.json")):
        raise ReportError(f"{root} holds no stage output (no */manifest.json) and no evaluation: nothing to report; "
                          "give a recipe's output_dir, e.g. runs/magpie_air")
    data_stage = next((s for s in DATA_STAGES if s in stages and stages[s]["status"] == "complete"), None)
    report = {"run": _run_info(root), "stages": stages, "missing": missing, "data_stage": data_stage,
              "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if data_stage:
        ds = store.DatasetDir(getattr(RunLayout(root), data_stage))
        fates, filt = _fates(root, ds)
        report["distributions"] = _distributions(ds)
        report["filter"] = {"config": filt, "funnel": (stages.get("filtered") or {}).get("funnel")} if filt else None
        report["samples"], report["sample_of"] = _samples(ds, fates, sample, seed)
        report["embedding_map"] = _embedding_map(ds, [Path(p) for p in compare], map_sample, seed)
    pref = store.DatasetDir(RunLayout(root).pref_export)
    if pref.complete:
        chosen, rejected = pair_scores(pref.path)  # the native or the released (--export_format magpie) layout
        report["preferences"] = {"counts": pref.manifest()["counts"],
                                 "margin": _histogram(np.array(chosen, float) - np.array(rejected, float))}
    report["evaluations"] = _evaluations(root)
    return _json_safe(report)


# -- writing --------------------------------------------------------------------------------------
def _assets() -> dict:
    """Plotly's and DataTables' JavaScript, inline: no network when the page is opened."""
    import itables
    import plotly.offline

    bundle = Path(itables.__file__).parent / "html" / "dt_bundle.js"
    return {"plotly_js": plotly.offline.get_plotlyjs(),
            "datatables_b64": base64.b64encode(bundle.read_bytes()).decode("ascii"),
            "datatables_css": bundle.with_suffix(".css").read_text(encoding="utf-8")}


def write_report(root, out: str | Path | None = None, compare=(), sample: int = 5000, map_sample: int = 2000,
                 seed: int = 0) -> dict:
    """Gather and write `<root>/report/index.html` (or `out`) and `data.json` beside it. Returns a summary."""
    import jinja2

    t0 = time.perf_counter()
    data = gather(root, compare, sample, map_sample, seed)
    out = Path(out) if out else RunLayout(root).report / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATE.parent)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    # The data goes in a JSON script block: escape "</" so no string can close it.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    html = env.get_template(_TEMPLATE.name).render(data=data, payload=payload, **_assets())
    store.atomic_write_text(out, html)
    store.atomic_write_text(out.parent / "data.json", json.dumps(data, indent=1, ensure_ascii=False))
    return {"out": str(out), "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 1),
            "rows": (data.get("distributions") or {}).get("rows", 0), "samples": len(data.get("samples") or []),
            "missing": data["missing"], "evaluations": len(data["evaluations"])}


def main(argv: list[str]) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m report", description="One static HTML report of a run folder.")
    ap.add_argument("run", help="a recipe's output_dir, e.g. runs/magpie_air")
    ap.add_argument("--compare", nargs="*", default=[], help="dataset dirs or SFT set files to map beside this run")
    ap.add_argument("--sample", type=int, default=5000, help="rows in the sample browser (seeded; default 5000)")
    ap.add_argument("--map_sample", type=int, default=2000, help="instructions per set on the embedding map")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=None, help="default: <run>/report/index.html")
    args = ap.parse_args(argv)
    try:
        for key in ("sample", "map_sample"):
            if getattr(args, key) < 0:
                raise ReportError(f"--{key} {getattr(args, key)}: give 0 or more rows (0: none)")
        s = write_report(args.run, args.output, args.compare, args.sample, args.map_sample, args.seed)
    except (ReportError, FileNotFoundError, store.IncompleteInput) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full disk under --output (or the run folder, its default)
        print(f"error: {store.write_error(e, args.output or args.run, '--output')}", file=sys.stderr)
        return 2
    missing = f"; missing: {', '.join(s['missing'])}" if s["missing"] else ""
    print(f"[report] {s['rows']:,} rows, {s['samples']:,} in the browser, {s['evaluations']} evaluation(s) in "
          f"{s['seconds']}s{missing} -> {s['out']} ({s['bytes'] / 2**20:.1f} MiB)")
    return 0
