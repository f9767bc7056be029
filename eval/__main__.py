"""`python -m eval <verb> ...`

  run    evaluate one model: AlpacaEval 2, Arena-Hard and lm-eval jobs (the config's `benchmarks`)
         python -m eval run --config recipes/configs/eval/<profile>.yaml --model runs/magpie_air/sft \\
             --output_dir runs/magpie_air/eval
  table  paper Table 1 beside the measured results: table.md, table.csv, table.png
         python -m eval table runs/*/eval [--output DIR] [--only-measured]
  arena  Arena-Hard leaderboard: the models of several evaluations scored together, as show_result.py does
         python -m eval arena runs/a/eval runs/b/eval [--version v0.1|v2.0] \
             [--control-features length markdown] [--output DIR]
  rejudge  the answers of an evaluation judged again by another judge, without generating them again
         python -m eval rejudge runs/magpie_air/eval --judge gpt-5-nano [--output_dir DIR] [--yes]
  cost   what the judges of an evaluation would cost (calls, tokens, dollars), per judge; nothing is run
         python -m eval cost --config recipes/configs/eval/paper.yaml [--judges gpt-4.1 gpt-5-nano paper]
  run --help  every config key of `run` with its default's source

Before its first paid call, `run` (and `rejudge`) prints the judges' estimated cost and stops above
judge_max_usd unless given --yes.

An interrupted `run` resumes when started again with the same config.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.cli import die


def _parse(rest: list[str]):
    from core.config import parse

    from .config import ALL

    try:
        return parse(rest, ALL)
    except ValueError as e:  # one line that says where the bad value came from
        die(str(e))


def _run(rest: list[str]) -> int:
    from core import store, tracking
    from core.config import stage_config

    from .run import evaluate

    margs, eargs, jargs, bargs, hargs = _parse(rest)
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


def _rejudge(rest: list[str]) -> int:
    """`run` on an evaluation's own config with another judge: its prompts and answers are copied to the new
    output_dir, so the model under test is not loaded (the answers' config is the same)."""
    import shutil
    import tempfile
    from dataclasses import fields

    import yaml

    from .benchmarks import get_benchmark
    from .config import JudgeArgs
    from .run import CONFIG_FILE

    if not rest or rest[0].startswith("-"):
        die("python -m eval rejudge EVAL_DIR --judge NAME [--output_dir DIR] [any judge key]: name the evaluation")
    src, rest = Path(rest[0]), rest[1:]
    saved = src / CONFIG_FILE
    if not saved.is_file():
        die(f"{src} has no {CONFIG_FILE} (evaluations record it since the judge registry; older ones: run "
            f"`python -m eval run` again with its config, the new judge and another --output_dir)")
    keys = yaml.safe_load(saved.read_text())
    for f in fields(JudgeArgs):  # the judge is the new one's, every key of it
        keys.pop(f.name, None)
    evaluated, keys["benchmarks"] = keys["benchmarks"], [b for b in keys["benchmarks"] if get_benchmark(b).judged]
    if not keys["benchmarks"]:
        die(f"{src}: no judged benchmark to judge again (its benchmarks: {evaluated})")
    given = {a[2:].split("=", 1)[0] for a in rest if a.startswith("--")}
    if "output_dir" not in given:
        judge = next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--judge", "--judge_model")), "judge")
        rest += ["--output_dir", str(src / "rejudged" / judge.replace("/", "_").replace(":", "_"))]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(keys, sort_keys=False))
        argv = ["--config", str(cfg), *rest, "--rejudged_from", str(src)]
        out = Path(_parse(argv)[1].output_dir)
        if out.resolve() == src.resolve():
            die(f"--output_dir {out} is the evaluation judged already; give another folder")
        for b in keys["benchmarks"]:  # the prompts and the answers, as they are
            for part in ("prompts", "answers"):
                if (src / b / part).is_dir() and not (out / b / part).exists():
                    shutil.copytree(src / b / part, out / b / part)
        return _run(argv)


def _cost(rest: list[str]) -> int:
    """The judges' cost estimate of a config, for one or several named judges; nothing generated, nothing sent."""
    ap = argparse.ArgumentParser(prog="python -m eval cost", add_help=False)
    ap.add_argument("--judges", nargs="+", default=None)
    a, rest = ap.parse_known_args(rest)
    from . import cost
    from .run import cost_before_answers

    for judge in a.judges or [None]:
        margs, eargs, jargs, bargs, _ = _parse(rest + (["--judge", judge] if judge else []))
        try:
            est = cost_before_answers(margs, eargs, jargs, bargs)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            die(str(e).splitlines()[0])
        print(cost.summary(est, title=f"[cost] judge {judge or jargs.judge_model}"))
    return 0


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

    from .arena import CONTROL_FEATURES, CONTROL_FITS, VERSIONS
    from .leaderboard import leaderboard, text, write

    ap = argparse.ArgumentParser(prog="python -m eval arena", description="Arena-Hard leaderboard of evaluations "
                                 "that share a judge and a baseline, scored together (arena-hard-auto show_result.py)")
    ap.add_argument("evals", nargs="+", help="evaluation folders of `python -m eval run` (or their arena_hard/)")
    ap.add_argument("--version", choices=VERSIONS, help="v0.1 (the paper's) or v2.0 (per category); "
                    "default: the one the runs were evaluated with")
    ap.add_argument("--control-features", "-f", nargs="+", default=[], choices=CONTROL_FEATURES,
                    help="style control, as show_result.py --control-features")
    ap.add_argument("--control-fit", choices=CONTROL_FITS, default="show_result",
                    help="style control's fit: show_result (its own 50 L-BFGS steps, the leaderboards' numbers) or "
                         "converged (the maximum-likelihood fit, up to a few tenths of a point away)")
    ap.add_argument("--num-rounds", type=int, default=100, help="bootstrap rounds (show_result.py: 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="runs/arena_leaderboard", help="folder for leaderboard.{md,csv,json}")
    a = ap.parse_args(rest)
    try:
        rows, info = leaderboard(a.evals, a.version, a.control_features, a.num_rounds, a.seed, a.control_fit)
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
    verbs = {"run": _run, "rejudge": _rejudge, "cost": _cost, "table": _table, "arena": _arena}
    if argv[0] not in verbs:
        die(f"unknown verb {argv[0]!r}; choose {', '.join(verbs)}")
    return verbs[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
