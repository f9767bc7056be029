"""Generation engines: `hf` (transformers), `vllm` (GPU, optional extra), `openai` (a server)."""
from .base import Completion, Engine, Sampling, cut_at_stop, encode_prompt, engine_names, get_engine, register_engine

__all__ = ["Completion", "Engine", "Sampling", "cut_at_stop", "encode_prompt", "engine_names", "get_engine", "register_engine"]
