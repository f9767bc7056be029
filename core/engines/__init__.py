"""Generation engines: `hf` (transformers), `vllm` (GPU, optional extra), `openai` (a server). `__all__` is the
public face of the generation layer that synth/, eval/ and train/ use (dtype_name: what `dtype: auto` means;
LazyEngine: a role's engine, built on first use)."""
from .base import (
           SEED_SCHEME,
           Completion,
           Engine,
           Sampling,
           cut_at_stop,
           document_prefix,
           encode_prompt,
           sample_seed,
           stream_seed,
           too_long_count,
)
from .dtype import cpu_computes_bf16, dtype_name
from .registry import get_engine, register_engine, shared_engine
from .role import LazyEngine, ModelRole, check_context

__all__ = ["SEED_SCHEME", "Completion", "Engine", "LazyEngine", "ModelRole", "Sampling", "check_context",
           "cpu_computes_bf16", "cut_at_stop", "document_prefix", "dtype_name", "encode_prompt", "get_engine", "register_engine", "sample_seed",
           "shared_engine", "stream_seed", "too_long_count"]
