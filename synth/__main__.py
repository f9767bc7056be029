"""`python -m synth <verb> --config recipes/configs/synth/<profile>.yaml [--key value ...]`

Verbs (each reads and writes dataset directories under --output_dir):
  instructions   step 1: sample instructions from the pre-query template  -> <output_dir>/instructions
  responses      step 2: answer them with the chat template               -> <output_dir>/responses
  run            both, in order (what recipes/magpie_air.sh calls)
  template       print the derived pre-query template, stops and multi-turn append template

A run killed at any point resumes when started again with the same config. Keys of the YAML
and their defaults: `python -m synth keys`.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

VERBS = ("instructions", "responses", "run", "template", "keys")


def _die(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def _summary(stage: str, counts: dict, out: Path, seconds: float, unit: str, n: int) -> str:
    rate = n / seconds * 60 if seconds > 0 else float("nan")
    tok = counts.get("tokens_this_run", 0) / seconds if seconds > 0 else float("nan")
    extra = ""
    if "dropped" in counts:
        extra = " (dropped: " + ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) + ")"
    if "truncated" in counts:
        extra = f" ({counts['truncated']} hit max_tokens)"
    return (f"[{stage}] {n} {unit}{extra} in {seconds:.1f}s: {rate:.1f} {unit}/min, {tok:.0f} generated tok/s"
            f" -> {out}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        print(__doc__)
        return 0 if (not argv or argv[0] in ("-h", "--help")) else _die(f"unknown verb {argv[0]!r}; choose {', '.join(VERBS)}")
    verb, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from . import config as cfg

    if verb == "keys":
        print(cfg.field_help())
        return 0
    try:
        margs, iargs, rargs, run = cfg.parse(rest)
    except (ValueError, TypeError) as e:  # bad YAML, unknown key, bad value
        _die(f"config: {str(e).splitlines()[0]}")
    except FileNotFoundError as e:
        _die(f"config file not found: {e.filename}")
    except Exception as e:  # yaml.YAMLError and friends: name the input, not a traceback
        _die(f"config: {e.__class__.__name__}: {' '.join(str(e).split())[:300]}")

    from . import instructions as ins, responses as res, store, tracking
    from .engines import get_engine

    root = Path(run.output_dir)
    try:
        if verb == "responses":  # fail on a missing input before loading a model
            store.DatasetDir(root / "instructions").require_complete()
        engine = get_engine(margs.engine, **margs.engine_kwargs())
        if verb == "template":
            tpl, stops = ins.resolve_template(engine, margs, iargs)
            print(json.dumps({**tpl.to_dict(), "instruction_stops": stops}, indent=2))
            return 0
        group = run.wandb_group or root.name
        log_cfg = {"profile": run.profile, **cfg.stage_config(margs, iargs, rargs)}
        if verb in ("instructions", "run"):
            with tracking.stage_run("instructions", log_cfg, root, run.report_to, run.wandb_project, group) as log:
                t0 = time.perf_counter()
                c = ins.generate_instructions(engine, margs, iargs, run, root / "instructions")
                dt = time.perf_counter() - t0
                log({"instructions/kept": c["kept"], "instructions/sampled": c["sampled"],
                     **{f"instructions/dropped_{k}": v for k, v in c["dropped"].items()},
                     "instructions/per_min": c["sampled"] / dt * 60, "instructions/tok_per_s": c["tokens_this_run"] / dt})
            print(_summary("instructions", c, root / "instructions", dt, "instructions", c["kept"]))
        if verb in ("responses", "run"):
            with tracking.stage_run("responses", log_cfg, root, run.report_to, run.wandb_project, group) as log:
                t0 = time.perf_counter()
                c = res.generate_responses(engine, margs, rargs, root / "instructions", root / "responses")
                dt = time.perf_counter() - t0
                log({"responses/pairs": c["pairs"], "responses/truncated": c["truncated"],
                     "responses/per_min": c["pairs"] / dt * 60, "responses/tok_per_s": c["tokens_this_run"] / dt})
            print(_summary("responses", c, root / "responses", dt, "pairs", c["pairs"]))
    except (store.RunMismatch, store.IncompleteInput, FileNotFoundError, ImportError, ValueError) as e:
        _die(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
