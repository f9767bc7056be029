"""A model role: which model a stage uses and how an engine runs it, the same keys for every role.

The generator, the response model, the judge, the guard, the base model, the reward model, the eval
reference and judge, and lm-eval each carry one `ModelRole` (config: `core.config.role_args` gives each
role its prefixed keys, `judge_engine`, `judge_max_model_len`, ...). `build()` makes the engine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import base, registry
from .base import VLLM_KEYS

ENGINES = ("vllm", "hf", "openai")
KEYS = ("model", "engine", "dtype", "device", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization",
        "hf_batch_size", "base_url", "trust_remote_code", "quantization", "kv_cache_dtype", "max_num_seqs",
        "enforce_eager", "enable_thinking", "chat_template_kwargs", "template_date", "chat_template")


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
    # The chat template's variables (core/templates.py), the same in every render of this role: the pre-query
    # template, the answers, a judge's prompts. None: the template's own default.
    enable_thinking: bool | None = None  # Qwen3, SmolLM3, ...
    chat_template_kwargs: dict | None = field(default=None, hash=False)  # reasoning_effort, tools, ...
    template_date: str | None = None  # YYYY-MM-DD rendered as today (None: templates.DEFAULT_TEMPLATE_DATE)
    # A chat template file used instead of the tokenizer's own (.jinja, chat_template.json, tokenizer_config.json):
    # every render of this role, the pre-query template included. None: the model's.
    chat_template: str | None = None

    def replace(self, **kw) -> ModelRole:
        return dataclasses.replace(self, **kw)

    def template_kwargs(self) -> dict:
        """The variables of every render of this role's chat template: chat_template_kwargs, enable_thinking and the
        date (templates.DATE_KEY). The one place they live: the engine renders answers with them (engine_kwargs) and
        the pre-query template is derived with them."""
        kw = dict(self.chat_template_kwargs or {})
        if self.enable_thinking is not None:
            if kw.get("enable_thinking", self.enable_thinking) != self.enable_thinking:
                raise ValueError(f"enable_thinking {self.enable_thinking} and chat_template_kwargs' enable_thinking "
                                 f"{kw['enable_thinking']} disagree; set one of them")
            kw["enable_thinking"] = self.enable_thinking
        return kw | ({"template_date": self.template_date} if self.template_date is not None else {})

    def engine_kwargs(self) -> dict:
        """Constructor arguments of this role's engine, `model` included."""
        # sent only when set: an engine of a role without them is the same shared engine as before
        tk = {"template_kwargs": self.template_kwargs()} if self.template_kwargs() else {}
        tk |= {"chat_template": self.chat_template} if self.chat_template else {}  # registry.get_engine puts it in
        if self.engine == "hf":
            kw = dict(model=self.model, dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code,
                      max_model_len=self.max_model_len)
            return kw | ({"batch_size": self.hf_batch_size} if self.hf_batch_size else {}) | tk
        if self.engine == "vllm":
            kw = dict(model=self.model, dtype=self.dtype, tensor_parallel_size=self.tensor_parallel_size,
                      gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
                      trust_remote_code=self.trust_remote_code)
            return kw | {k: getattr(self, k) for k in VLLM_KEYS if getattr(self, k) is not None} | tk
        if self.engine == "openai":
            return dict(model=self.model) | ({"base_url": self.base_url} if self.base_url else {}) | tk
        raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")

    def build(self) -> base.Engine:
        return registry.get_engine(self.engine, **self.engine_kwargs())  # every engine of the repo is built there

    def shared(self) -> base.Engine:
        """The process's one engine for this role (roles on the same model and settings share it)."""
        kw = self.engine_kwargs()
        return registry.shared_engine(self.engine, kw.pop("model"), **kw)


def check_context(limits: dict, context: int | None, model: str) -> None:
    """Refuse a token limit longer than the model's context (prompt and answer share it): vLLM and transformers
    would accept --max_tokens 10000000000 and the stage would run on a limit it can never reach."""
    for key, value in limits.items():
        if context and value is not None and value > context:
            raise ValueError(f"{key} {value} is more than the context of {model}, {context} tokens (max_model_len); "
                             f"lower {key}")


class LazyEngine:
    """A model role's engine, built on first use: work whose output is already complete never loads it.
    `limits` ({key: tokens}) are checked against the model's context as it loads, before anything is generated."""

    def __init__(self, role: ModelRole, limits: dict | None = None):
        self.role, self.loaded, self.limits = role, None, limits or {}

    def within_context(self, limits: dict) -> LazyEngine:
        self.limits = limits
        if self.loaded is not None:
            check_context(limits, getattr(self.loaded, "max_model_len", None), self.role.model)
        return self

    def __getattr__(self, name):
        if self.loaded is None:
            self.loaded = self.role.build()
            check_context(self.limits, getattr(self.loaded, "max_model_len", None), self.role.model)
        return getattr(self.loaded, name)

    def close(self) -> None:  # free the model before another one loads (one model at a time)
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None

    def __enter__(self) -> LazyEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
