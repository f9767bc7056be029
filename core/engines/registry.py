"""The engines by name: `get_engine("vllm", model=...)` builds one, `shared_engine` keeps one per model and settings
in this process. The three engines of the repo are registered here (each imports its library only when built);
`register_engine` adds another."""
from __future__ import annotations

from collections.abc import Callable

from .base import Engine
from .hf import HFEngine
from .openai import OpenAIEngine
from .vllm import VLLMEngine

_REGISTRY: dict[str, Callable[..., Engine]] = {"hf": HFEngine, "vllm": VLLMEngine, "openai": OpenAIEngine}


def register_engine(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        return cls

    return deco


def get_engine(name: str, chat_template: str | None = None, **kwargs) -> Engine:
    """Build an engine by registry name. Engines whose library is missing say what to install. `chat_template`: a file
    whose template replaces the tokenizer's own (a role's `chat_template` key), in every render of the engine."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(_REGISTRY)}")
    engine = _REGISTRY[name](**kwargs)
    if chat_template:
        from ..templates import read_chat_template_file

        if engine.tokenizer is None:
            raise ValueError(f"chat_template {chat_template}: the {name} engine of {kwargs.get('model')} has no local "
                             "tokenizer to render it with; give it one (openai engine: tokenizer=<model>)")
        engine.tokenizer.chat_template = read_chat_template_file(chat_template)["chat_template"]
    return engine


_SHARED: dict[tuple, Engine] = {}


def _key(name: str, model: str, kwargs: dict) -> tuple:
    return name, model, tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "gpu_memory_utilization"))


def shared_engine(name: str, model: str, **kwargs) -> Engine:
    """One engine per (engine, model, kwargs) in this process: the three judge taggers (and the eval
    judge) use the same model, and loading an 8B model three times would triple memory and start-up. A memory
    setting (gpu_memory_utilization) makes no second engine of the same model: the first one's applies."""
    key = _key(name, model, kwargs)
    if key not in _SHARED:
        _SHARED[key] = get_engine(name, model=model, **kwargs)
    return _SHARED[key]


def release_shared() -> None:
    """Close and forget every shared engine of this process (a model's process does this before it exits)."""
    while _SHARED:
        _SHARED.popitem()[1].close()


def lend(engine, name: str, model: str, **kwargs) -> tuple:
    """Make `engine` (one this process already holds, e.g. a stage's LazyEngine) the shared engine of (name, model,
    kwargs), so that whoever asks for that engine gets it instead of building a second one (the taggers on the
    generator's engine, synth.stages). Returns the key, for `take_back`."""
    key = _key(name, model, kwargs)
    _SHARED.setdefault(key, engine)
    return key


def take_back(*keys: tuple) -> None:
    """Forget lent engines without closing them: their owner closes them."""
    for key in keys:
        _SHARED.pop(key, None)
