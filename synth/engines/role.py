"""A model role: which model a stage uses and how an engine runs it, the same keys for every role.

The generator, the response model, the judge, the guard, the base model, the reward model, the eval
reference and judge, and lm-eval each carry one `ModelRole` (config: `synth.config.role_args` gives each
role its prefixed keys, `judge_engine`, `judge_max_model_len`, ...). `build()` makes the engine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import base

ENGINES = ("vllm", "hf", "openai")
KEYS = ("model", "engine", "dtype", "device", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization",
        "hf_batch_size", "base_url", "trust_remote_code", "quantization", "kv_cache_dtype", "max_num_seqs",
        "enforce_eager")
# vLLM's own settings: passed to vllm.LLM only when set (unset, vLLM's defaults apply and old runs stay resumable).
VLLM_KEYS = ("quantization", "kv_cache_dtype", "max_num_seqs", "enforce_eager")


@dataclass(frozen=True)
class ModelRole:
    model: str
    engine: str = "vllm"
    dtype: str = "bfloat16"
    device: str = "auto"  # hf: cpu, cuda, auto
    max_model_len: int | None = None  # None: the model's own context length (Llama-3: 8192)
    tensor_parallel_size: int = 1  # vllm
    gpu_memory_utilization: float = 0.9  # vllm (on CPU: the share of RAM, unless VLLM_CPU_KVCACHE_SPACE is set)
    hf_batch_size: int | None = None  # hf: rows per generate call; None: the caller's (a tagger's cap)
    base_url: str | None = None  # openai
    trust_remote_code: bool = False
    quantization: str | None = None  # vllm: fp8, awq, gptq, ... (the reference's judge: fp8)
    kv_cache_dtype: str | None = None  # vllm: auto, fp8
    max_num_seqs: int | None = None  # vllm: sequences in flight per step
    enforce_eager: bool | None = None  # vllm: no CUDA graphs / torch.compile (default on a CPU, see engines/vllm.py)

    def replace(self, **kw) -> ModelRole:
        return dataclasses.replace(self, **kw)

    def engine_kwargs(self) -> dict:
        """Constructor arguments of this role's engine, `model` included."""
        if self.engine == "hf":
            kw = dict(model=self.model, dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code,
                      max_model_len=self.max_model_len)
            return kw | ({"batch_size": self.hf_batch_size} if self.hf_batch_size else {})
        if self.engine == "vllm":
            kw = dict(model=self.model, dtype=self.dtype, tensor_parallel_size=self.tensor_parallel_size,
                      gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
                      trust_remote_code=self.trust_remote_code)
            return kw | {k: getattr(self, k) for k in VLLM_KEYS if getattr(self, k) is not None}
        if self.engine == "openai":
            return dict(model=self.model) | ({"base_url": self.base_url} if self.base_url else {})
        raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")

    def build(self) -> base.Engine:
        return base.get_engine(self.engine, **self.engine_kwargs())  # every engine of the repo is built there

    def shared(self) -> base.Engine:
        """The process's one engine for this role (roles on the same model and settings share it)."""
        kw = self.engine_kwargs()
        return base.shared_engine(self.engine, kw.pop("model"), **kw)
