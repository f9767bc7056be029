"""Generation engines: `hf` (transformers), `vllm` (GPU, optional extra), `openai` (a server).

The public face of the generation layer, used by synth/, eval/ and train/:
    get_engine(name, **kwargs), shared_engine(name, model, **kwargs), Engine, Sampling, Completion,
    register_engine, encode_prompt, cut_at_stop; dtype_name / cpu_computes_bf16 (what `dtype: auto` means).
"""
from .base import (Completion, Engine, Sampling, cut_at_stop, encode_prompt, get_engine, register_engine,
                   shared_engine)
from .dtype import cpu_computes_bf16, dtype_name

__all__ = ["Completion", "Engine", "Sampling", "cpu_computes_bf16", "cut_at_stop", "dtype_name", "encode_prompt",
           "get_engine", "register_engine", "shared_engine"]
