"""How long a synthesis job will take, and on how many GPU-hours: a forecast from a short run of the job itself.

    python -m synth plan --config recipes/configs/synth/air.yaml [--calibrate 400] [--key value ...]

The calibration is the configured job, for real, on `calibrate` instructions (and the preference stages on as
large a share of theirs) in a temporary folder: the same model, engine and settings, the same n per round, shard
and batch sizes. Its engines log every step (core.steplog): how many sequences ran, with how many prompt tokens, in
how long, and what each request asked and got. Each stage's time is then split three ways:
- fixed costs, kept as they are: engine builds, model and tagger loads, process starts, plots;
- engine steps, grown as the engine would run the job: a step's cost is fitted as a + b x running sequences + c x
  prompt tokens, and the job's requests (the calibration's, over again) run through vLLM's continuous batch (up to
  max_num_seqs at once) or hf's fixed batches; the step time grows by that over the calibration's own. On this
  CPU a vLLM step of 48 sequences costs 2.2x one of 16 (169 against 78 ms), and the longest answer sets the number
  of steps: scaling the tiny job's 16-instruction calibration by three said 1.77x its real time;
- the rest (reading, writing, scoring, embedding), scaled by the job's size.
A stage without a step log (its engines on Ray actors) scales its shards' time. Per stage: items, generated
tokens, hours, and GPU-hours (hours x the GPUs its engine holds, tensor_parallel_size; none on a CPU), beside the
paper's cost of Air-3M.

What it cannot see: how far the calibration's sample (its keep rate, its answer lengths) is from the job's, which
a larger calibration narrows; and a Ray cluster's actors (the forecast is for this machine).
`benchmarks/plan_accuracy.py` checks the forecast against the real tiny run.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHARS_PER_TOKEN = 4  # English text in the Llama-3 and SmolLM2 tokenizers, near enough for weighing engines
GUARD_PROMPT_TOKENS = 350  # Llama-Guard-2's policy around the exchange (its chat template; the stand-in's is shorter)

# Paper section 3 / Table 11: Air-3M, 1.55 h of instructions + 50 h of responses on 4 A100-80GB = 206 GPU-hours.
PAPER_AIR = {"pairs": 3_000_000, "gpu_hours": 206, "instructions_hours": 1.55, "responses_hours": 50, "gpus": 4}


def calibration_argv(argv: list[str], total: int, calibrate: int, pref_size: int | None, out: str) -> list[str]:
    scale = calibrate / total
    extra = ["--total_prompts", str(calibrate), "--output_dir", out, "--report_to", "none"]
    if pref_size:
        extra += ["--pref_size", str(max(2, math.ceil(pref_size * scale)))]
    return [*argv, *extra]


def forecast(times: list[dict], scale: float, pref_scale: float, gpus: dict[str, int],
             log: list[dict] | None = None) -> list[dict]:
    """Per stage of a calibration (its stage_times.jsonl lines): the job's items, tokens, seconds and GPU-hours. The
    preference stages scale with the preference set, the others with the instructions.

    With the calibration's step log (core.steplog) a stage's time is its fixed costs (engine builds, model loads,
    process starts, plots), its engines' steps, and the rest; the rest grows with the work, and the steps as the
    engine would run the job's requests (occupancy). Without one (a stage whose engines ran on Ray actors, or no
    log), what grows is the stage's `seconds`, scaled by the job's size."""
    from .stages import STAGES, VERB_STAGES

    log = log or []
    costs = step_costs(log)
    rows = []
    for t in times:
        f = pref_scale if t["stage"] in VERB_STAGES["preferences"] else scale
        end = t.get("at", -1.0)  # when the stage ended (every line has it; a hand-written one may not)
        start = end - t["wall_seconds"]
        mine = [r for r in log if start <= r["t"] <= end]
        steps = [r for r in mine if "step" in r]
        stepping = sum(r["dt"] for r in steps)
        if steps:
            fixed = _union([(r["t"] - r["dt"], r["t"]) for r in mine if "fixed" in r], start, end)
            rest = max(t["wall_seconds"] - fixed - stepping, 0.0)
            seconds = fixed + rest * f + sum(_grown_steps(mine, engine, costs[engine], f) for engine in
                                             {r["step"] for r in steps})
        else:
            growing = min(t.get("seconds", t["wall_seconds"]), t["wall_seconds"])
            fixed = t["wall_seconds"] - growing
            seconds = fixed + growing * f
        tokens = t.get("tokens_this_run", t.get("tokens"))
        count = STAGES[t["stage"]].count if t["stage"] in STAGES else None  # what its summary line counts
        rows.append({"stage": t["stage"], "calibration_seconds": round(t["wall_seconds"], 1),
                     "items": round(t[count] * f) if count in t else None,
                     "steps_seconds": round(stepping, 1),
                     "fixed_seconds": round(fixed, 1), "seconds": round(seconds, 1), "hours": seconds / 3600,
                     "tokens": None if tokens is None else int(tokens * f), "gpus": gpus.get(t["stage"], 0),
                     "gpu_hours": seconds / 3600 * gpus.get(t["stage"], 0)})
    return rows


# -- batch occupancy: a calibration smaller than the engine's batch runs it less full than the job will ----------
SIMULATED = 100_000  # requests simulated at most; beyond, the engine is full and time grows with the requests


def step_costs(log: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Per engine of the log: the seconds of a step as a + b x running sequences, plus c per prompt token prefilled,
    fitted to all its steps (non-negative least squares over the subsets of the three terms). A step of k sequences
    costs more than one of 1 but far less than k of them: that is the batch's whole point, and why the time of 16
    answers says little of 48's."""
    import itertools

    import numpy as np

    by: dict[str, list] = {}
    for r in log:
        if "step" in r:
            by.setdefault(r["step"], []).append((r["n"], r["n"] * r["k"], r["p"], r["dt"]))
    costs = {}
    for engine, rows in by.items():
        x, y = np.array([r[:3] for r in rows], float), np.array([r[3] for r in rows], float)
        ks = x[:, 1] / x[:, 0]
        # Steps of nearly one size (hf's full batches) cannot tell a from b: a step then costs the same whatever it
        # holds (hf, 16 rows here: a 32-row step cost 1.4x a 16-row one, not 2x: closer to flat than to per row)
        usable = (0, 1, 2) if ks.max() >= 2 * ks.min() else (0, 2)
        best = (np.inf, (y.sum() / max(x[:, 0].sum(), 1), 0.0, 0.0))  # no fit: a flat cost per step
        for terms in itertools.chain.from_iterable(itertools.combinations(usable, n) for n in (1, 2, 3)):
            coef = np.linalg.lstsq(x[:, terms], y, rcond=None)[0]
            if (coef >= 0).all():
                err = float(((x[:, terms] @ coef - y) ** 2).sum())
                if err < best[0]:
                    full = np.zeros(3)
                    full[list(terms)] = coef
                    best = (err, tuple(full.tolist()))
        costs[engine] = best[1]
    return costs


def engine_seconds(kind: str, cap: int, pairs: list, cost: tuple[float, float, float]) -> float:
    """Seconds for an engine of `kind` to run requests of (prompt, generated) tokens at `cost` per step: vLLM keeps
    up to `cap` sequences running and admits the next as one finishes; hf runs batches of `cap` rows (sorted by
    prompt length, as HFEngine does) for as many steps as the batch's longest answer."""
    import heapq

    a, b, c = cost
    if kind == "hf":
        rows = sorted(pairs)
        return sum(max(g for _, g in rows[i:i + cap]) * (a + b * len(rows[i:i + cap]))
                   + c * len(rows[i:i + cap]) * max(p for p, _ in rows[i:i + cap]) for i in range(0, len(rows), cap))
    seconds, step, running, queue = 0.0, 0, [], list(reversed(pairs))
    while queue or running:
        while queue and len(running) < cap:
            p, g = queue.pop()
            seconds += c * p
            heapq.heappush(running, step + max(g, 1))
        nxt = running[0]
        seconds += (nxt - step) * (a + b * len(running))
        step = nxt
        while running and running[0] == step:
            heapq.heappop(running)
    return seconds


def _grown_steps(records: list[dict], engine: str, cost: tuple, f: float) -> float:
    """An engine's step seconds in a stage of the calibration, grown to the job: times what its requests, f times
    as many (the calibration's, over again in order), would take over what the calibration's own took, both run
    through engine_seconds (whose errors then mostly cancel)."""
    steps = [r for r in records if r.get("step") == engine]
    pairs = [tuple(pg) for r in records if r.get("requests") == engine for pg in r["pg"]]
    measured = sum(r["dt"] for r in steps)
    kind, cap = steps[0]["kind"], steps[0]["cap"]
    own = engine_seconds(kind, cap, pairs, cost) if pairs else 0.0
    if own <= 0:
        return measured * f
    want = round(len(pairs) * f)
    n = min(want, SIMULATED)
    job = engine_seconds(kind, cap, [pairs[i % len(pairs)] for i in range(n)], cost) * want / n
    return measured * job / own


def _union(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] covered by the spans (a tagger's load holds its engine's build: counted once)."""
    total, reach = 0.0, start
    for a, b in sorted((max(a, start), min(b, end)) for a, b in spans):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def plan(argv: list[str], calibrate: int | None = None) -> dict:
    """Calibrate on a short run of the job `argv` (a synth config and overrides) and forecast the whole job."""
    from core import gpus as gpu_count
    from core import steplog
    from core.layout import RunLayout

    from .config import parse
    from .stages import STAGES, TIMES, Context, expand

    parsed = parse(argv)
    c = Context(*parsed)
    total, pref_size = c.iargs.total_prompts, c.pargs.pref_size
    calibrate = min(calibrate or max(c.iargs.n * c.iargs.rounds_per_shard, 64), total)
    names = expand(c.run.stages)
    cuda = gpu_count.count() > 0
    gpus = {n: (STAGES[n].model(c).tensor_parallel_size if cuda else 0) for n in names if STAGES[n].model is not None}
    gpus.update({n: (1 if cuda else 0) for n in names if STAGES[n].cluster_kw})  # its own models, one GPU each
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "synth", "run", *calibration_argv(argv, total, calibrate, pref_size, tmp)]
        steps = Path(tmp) / "steps.jsonl"  # beside stage_times.jsonl
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, "TQDM_DISABLE": "1", steplog.ENV: str(steps)},
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"the calibration run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        times = [json.loads(line) for line in (Path(tmp) / TIMES).read_text().splitlines()]
        log = steplog.read(steps) if steps.exists() else []
        prompts = RunLayout(Path(tmp)).pref_prompts / "manifest.json"
        picked = json.loads(prompts.read_text())["counts"].get("kept") if prompts.exists() else None
    scale = total / calibrate
    pref_full = pref_size or (None if picked is None else picked * scale)
    pref_scale = (pref_full / picked) if picked and pref_full else scale
    rows = forecast(times, scale, pref_scale, gpus, log)
    startup = max(wall - sum(t["wall_seconds"] for t in times), 0.0)  # the CLI's own imports and checks
    total_seconds = startup + sum(r["seconds"] for r in rows)
    return {"config": argv, "total_prompts": total, "calibrate": calibrate, "calibration_seconds": round(wall, 1),
            "startup_seconds": round(startup, 1), "stages": rows, "seconds": round(total_seconds, 1),
            "hours": total_seconds / 3600, "gpu_hours": sum(r["gpu_hours"] for r in rows), "cuda": cuda,
            "steps_logged": sum("step" in r for r in log), "paper_air_3m": PAPER_AIR}


def text(p: dict) -> str:
    def dur(s):
        return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"

    lines = [f"[plan] {p['total_prompts']:,} instructions, forecast from a calibration on {p['calibrate']:,} "
             f"({dur(p['calibration_seconds'])})", "",
             f"{'stage':<20} {'tokens':>14} {'time':>10} {'of it fixed':>12} {'GPUs':>5} {'GPU-hours':>10}"]
    for r in p["stages"]:
        tok = f"{r['tokens']:,}" if r["tokens"] is not None else "–"
        lines.append(f"{r['stage']:<20} {tok:>14} {dur(r['seconds']):>10} {dur(r['fixed_seconds']):>12} "
                     f"{r['gpus']:>5} {r['gpu_hours']:>10.2f}")
    lines.append(f"{'all (+ start-up)':<20} {'':>14} {dur(p['seconds']):>10} {'':>12} {'':>5} {p['gpu_hours']:>10.2f}")
    lines.append(f"(engine time grown from {p['steps_logged']:,} engine steps of the calibration, as the engine would "
                 "run the job's requests; fixed: engine builds, model loads, process starts, plots)"
                 if p["steps_logged"] else "(no engine steps logged: each stage's shard time grows with the job)")
    a = p["paper_air_3m"]
    lines += ["", f"paper, Air-3M ({a['pairs']:,} pairs): {a['gpu_hours']} GPU-hours on {a['gpus']} A100-80GB "
              f"({a['instructions_hours']} h instructions + {a['responses_hours']} h responses)"]
    if not p["cuda"]:
        lines.append("(no GPU here: the forecast is for this machine's CPU; GPU-hours are 0)")
    return "\n".join(lines)


# -- engine: auto ----------------------------------------------------------------------------------------------
def planned_work(parsed) -> dict[str, object]:
    """What each model role (by config prefix: "" the generator, "response_", "judge_", "base_", "guard_") is planned
    to do in the run `parsed`, in core.engine_choice.Work units: requests, prompt and new tokens, every answer at
    its max_tokens. A response role whose engine is unset answers on the generator's engine: its work is the
    generator's."""
    from core.engine_choice import Work

    from .stages import expand
    from .taggers.judge import CLASSIFICATION_PROMPT, DIFFICULTY_PROMPT, QUALITY_PROMPT
    from .taggers.reward import URIAL_PROMPT

    margs, iargs, rargs, mtargs, targs, fargs, eargs, pargs, run = parsed
    names, n, ask = expand(run.stages), iargs.total_prompts, iargs.max_tokens
    answer, resp = rargs.response_max_tokens, ("response_" if rargs.response_engine is not None else "")
    work: dict[str, Work] = {}

    def add(prefix, requests, prompt, new):
        work[prefix] = work.get(prefix, Work()) + Work(requests, requests * prompt, requests * new)

    if "instructions" in names:
        add("", n, 16, ask)  # the pre-query template: a dozen tokens
    if "responses" in names:
        add(resp, n, ask + 40, answer)  # the instruction in the chat template
    if "multiturn" in names:
        for turn in range(1, mtargs.turns):
            history = turn * (ask + answer) + 80  # the conversation so far and the MT system turn
            add("", n, history, mtargs.mt_max_tokens)
            add(resp, n, history + mtargs.mt_max_tokens, answer)
    if "tag" in names:
        prompts = {"task_category": CLASSIFICATION_PROMPT, "difficulty": DIFFICULTY_PROMPT,
                   "input_quality": QUALITY_PROMPT}
        for name in targs.taggers:
            if name in prompts:
                add("judge_", n, len(prompts[name]) // CHARS_PER_TOKEN + ask, targs.judge_max_tokens)
            elif name == "reward_difference" and targs.base_model:
                add("base_", n, len(URIAL_PROMPT) // CHARS_PER_TOKEN + ask, targs.base_max_tokens)
            elif name == "llama_guard_2":
                add("guard_", n, GUARD_PROMPT_TOKENS + ask + answer, 10)
    if "pref_samples" in names:
        picked = pargs.pref_size or n
        add(resp, picked * pargs.pref_k, ask + 40, pargs.pref_max_tokens)
    return work


TAG_ROLES = ("judge_", "base_", "guard_")  # the tag stage's generating roles: one process, one engine per model


def choose_engines(parsed) -> None:
    """Resolve every `engine: auto` of the synthesis config `parsed` for the work its role is planned to do (see
    core.engine_choice), one log line per decision. The tag stage's roles on one model load it once in one process,
    so they are decided together, on their summed work, as are the generator and the response role."""
    from core.engine_choice import Work, choose, say

    decisions: dict[tuple, list] = {}
    for part in parsed:
        for prefix in getattr(part, "auto_engines", ()):
            model = getattr(part, prefix + "model") or parsed[0].model
            decisions.setdefault((prefix in TAG_ROLES, model), []).append((part, prefix))
    work = planned_work(parsed) if decisions else {}  # a config that names every engine plans nothing
    for (_, model), roles in decisions.items():
        names = [{"": "generator"}.get(p, p.rstrip("_")) for _, p in roles]
        what = " + ".join(names)
        total = sum((work.get(p, Work()) for _, p in roles), Work())
        engine, why = choose(model, total if total.requests else None)
        for part, prefix in roles:
            setattr(part, prefix + "engine", engine)
        say(engine, why, f"{what} ({model})")
