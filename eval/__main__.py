"""`python -m eval <verb> ...`

  run    evaluate one model: AlpacaEval 2, Arena-Hard and lm-eval jobs (the config's `benchmarks`)
         python -m eval run --config recipes/configs/eval/<profile>.yaml --model runs/magpie_air/sft \\
             --output_dir runs/magpie_air/eval
  table  paper Table 1 beside the measured results: table.md, table.csv, table.png
         python -m eval table runs/*/eval [--output DIR] [--only-measured]
  arena  Arena-Hard leaderboard: the models of several evaluations scored together, as show_result.py does
         python -m eval arena runs/a/eval runs/b/eval [--version v0.1|v2.0] \
             [--control-features length markdown] [--output DIR]
  run --help  every config key of `run` with its default's source

An interrupted `run` resumes when started again with the same config.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.cli import die


def _run(rest: list[str]) -> int:
    from core import store, tracking
    from core.config import parse, stage_config

    from .config import ALL
    from .run import evaluate

    try:
        margs, eargs, jargs, bargs, hargs = parse(rest, ALL)
    except ValueError as e:  # one line that says where the bad value came from
        die(str(e))
    out = Path(eargs.output_dir)
    cfg = {"profile": eargs.profile, **stage_config(margs, eargs, jargs, bargs, hargs)}
    group = eargs.wandb_group or (out.parent.name if out.name == "eval" else out.name)
    try:
        with tracking.stage_run("eval", cfg, out, eargs.report_to, eargs.wandb_project, group) as log:
            r = evaluate(margs, eargs, jargs, bargs, hargs, log=log)
    except (store.RunMismatch, store.IncompleteInput, FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        die(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    print(summary_line(r, out))
    return 0


def summary_line(r: dict, out: Path) -> str:
    from .benchmarks import BENCHMARKS

    parts = [b.summary(r["benchmarks"][name]) for name, b in BENCHMARKS.items() if name in r["benchmarks"]]
    return f"[eval] {r['model_name']}: " + "; ".join(parts) + f"; {r['seconds']:.0f}s in all -> {out}/results.json"


def _table(rest: list[str]) -> int:
    from core import tracking

    from .table import write

    ap = argparse.ArgumentParser(prog="python -m eval table")
    ap.add_argument("results", nargs="+", help="evaluation folders (or their results.json)")
    ap.add_argument("--output", default="runs/paper_table", help="folder for table.md, table.csv, table.png")
    ap.add_argument("--only-measured", action="store_true", help="only the paper rows that have a measured result")
    ap.add_argument("--report_to", default="wandb")
    ap.add_argument("--wandb_project", default="magpie-repro")
    a = ap.parse_args(rest)
    try:
        with tracking.stage_run("table", {"results": a.results}, a.output, a.report_to, a.wandb_project,
                                Path(a.output).name) as log:
            t = write(a.results, a.output, only_measured=a.only_measured, log=log)
    except (FileNotFoundError, ValueError) as e:
        die(str(e).splitlines()[0])
    print(t["text"])
    print(f"[table] {t['rows']} rows, {t['measured']} measured -> {t['markdown']}, {t['csv']}, {t['png']}")
    return 0


def _arena(rest: list[str]) -> int:
    from core import store

    from .arena import CONTROL_FEATURES, VERSIONS
    from .leaderboard import leaderboard, text, write

    ap = argparse.ArgumentParser(prog="python -m eval arena", description="Arena-Hard leaderboard of evaluations "
                                 "that share a judge and a baseline, scored together (arena-hard-auto show_result.py)")
    ap.add_argument("evals", nargs="+", help="evaluation folders of `python -m eval run` (or their arena_hard/)")
    ap.add_argument("--version", choices=VERSIONS, help="v0.1 (the paper's) or v2.0 (per category); "
                    "default: the one the runs were evaluated with")
    ap.add_argument("--control-features", "-f", nargs="+", default=[], choices=CONTROL_FEATURES,
                    help="style control, as show_result.py --control-features")
    ap.add_argument("--num-rounds", type=int, default=100, help="bootstrap rounds (show_result.py: 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="runs/arena_leaderboard", help="folder for leaderboard.{md,csv,json}")
    a = ap.parse_args(rest)
    try:
        rows, info = leaderboard(a.evals, a.version, a.control_features, a.num_rounds, a.seed)
        files = write(rows, info, a.output)
    except (FileNotFoundError, ValueError, store.IncompleteInput) as e:
        die(str(e).splitlines()[0])
    print(text(rows, info))
    print(f"[arena] {len(info['runs'])} evaluations, {rows['model'].nunique()} models -> {', '.join(files.values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    verbs = {"run": _run, "table": _table, "arena": _arena}
    if argv[0] not in verbs:
        die(f"unknown verb {argv[0]!r}; choose run, table or arena")
    return verbs[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
