"""The planner's forecast against the real run (prints JSON).

    python benchmarks/plan_accuracy.py [--config recipes/configs/synth/tiny.yaml] [--calibrate 16]

`python -m synth plan` forecasts the config's job from a calibration on `calibrate` instructions; then the job runs
for real (`python -m synth run`, the same config, a fresh folder) and its stage times (stage_times.jsonl) and wall
time are compared with the forecast, stage by stage. The target (issue 22): the whole within 25%.
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
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "recipes/configs/synth/tiny.yaml"))
    ap.add_argument("--calibrate", type=int, default=16)
    a, rest = ap.parse_known_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}

    from synth.plan import plan
    from synth.stages import STAGES

    argv = ["--config", a.config, *rest]
    p = plan(argv, a.calibrate)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "synth", "run", *argv, "--output_dir", tmp, "--report_to", "none"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        real = {t["stage"]: t for t in map(json.loads, (Path(tmp) / "stage_times.jsonl").open())}
    # items: what each stage's summary line counts (instructions kept, pairs, records), forecast and real: the
    # calibration's keep rate and answer lengths are a sample of the job's, and the forecast carries their error
    stages = {r["stage"]: {"forecast_seconds": r["seconds"],
                           "real_seconds": round(real.get(r["stage"], {}).get("wall_seconds", 0.0), 1),
                           "calibration_seconds": r["calibration_seconds"], "fixed_seconds": r["fixed_seconds"],
                           "forecast_items": r["items"],
                           "real_items": real.get(r["stage"], {}).get(STAGES[r["stage"]].count)}
              for r in p["stages"]}
    print(json.dumps({"config": a.config, "total_prompts": p["total_prompts"], "calibrate": p["calibrate"],
                      "calibration_seconds": p["calibration_seconds"], "forecast_seconds": p["seconds"],
                      "real_seconds": round(wall, 1), "forecast_to_real": round(p["seconds"] / wall, 3),
                      "stages": stages}, indent=2))


if __name__ == "__main__":
    main()
