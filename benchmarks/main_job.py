"""The main job's synthesis and tagging (`bash recipes/magpie_air.sh` on a CPU: the tiny profile's instructions,
responses and tag stages) as the config runs it now, against the same job with every engine pinned to hf (the
tiny profile before `engine: auto`), side by side in one run (prints JSON).

    python benchmarks/main_job.py [--runs 1] [--systems auto hf]

Each system is `python -m synth run --config recipes/configs/synth/tiny.yaml` in a fresh process and a fresh
folder, timed from its start to its last stage; per stage the wall seconds of its stage_times.jsonl (the engine
builds and stage processes included). Reported: per system the stages' seconds, their sum and the whole command's,
the engines `engine: auto` chose (its log lines), the records each stage wrote; and hf / auto of the sum.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "recipes/configs/synth/tiny.yaml"
SYSTEMS = {
    "auto": [],  # the config as it is: engine: auto for the generator and the taggers
    "hf": ["--engine", "hf", "--judge_engine", "hf", "--base_engine", "hf", "--guard_engine", "hf"],
}
STAGES = ("instructions", "responses", "tag")


def run(system: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "synth", "run", "--config", str(CONFIG), "--output_dir", tmp,
                              "--report_to", "none", *SYSTEMS[system]], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"})
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
        times = [json.loads(line) for line in (Path(tmp) / "stage_times.jsonl").read_text().splitlines()]
    stages = {t["stage"]: t for t in times if t["stage"] in STAGES}
    return {
        "stage_seconds": {s: round(stages[s]["wall_seconds"], 1) for s in STAGES if s in stages},
        "synth_and_tag_seconds": round(sum(stages[s]["wall_seconds"] for s in STAGES if s in stages), 1),
        "command_seconds": round(wall, 1),
        "records": {s: stages[s].get("kept", stages[s].get("pairs", stages[s].get("records"))) for s in stages},
        "engines": [line for line in out.stderr.splitlines() if line.startswith("[engine] auto")],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    args = ap.parse_args()
    results = {s: run(s) for s in args.systems}
    report = {"config": str(CONFIG.relative_to(ROOT)), "systems": results}
    if all("synth_and_tag_seconds" in results.get(s, {}) for s in ("auto", "hf")):
        report["hf_over_auto"] = round(results["hf"]["synth_and_tag_seconds"] /
                                       results["auto"]["synth_and_tag_seconds"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
