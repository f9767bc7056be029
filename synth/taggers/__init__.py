"""Taggers: each adds the reference's fields to (instruction, response) records.

A tagger is registered by name and built from config; the tag stage (`synth/tag.py`) runs it
over a dataset directory in batches (or over all records at once, for `batch_size = None`),
resumably, and joins the fields onto the records.

Contract:
    fields: the columns it writes (the reference's names); a record it cannot tag gets None.
    tag(records) -> one dict of fields per record, in order. Records carry at least
        `id`, `instruction`, `response`, `messages`; only `columns` (and `id`) when the tagger names them.
    info(): what to record in the manifest and the dataset card, e.g. the model, and
        `stand_in` (a sentence) where the tiny profile replaces the paper's model.
    stats: counters the stage reports (e.g. `parse_failures`).
"""
from __future__ import annotations

from typing import Callable

from core.engines import shared_engine

_REGISTRY: dict[str, Callable[..., "Tagger"]] = {}


class Tagger:
    name: str = ""
    fields: tuple[str, ...] = ()
    batch_size: int | None = 64  # None: needs every record at once (nearest neighbours)
    columns: tuple[str, ...] | None = None  # the input columns tag() reads; None: all (a 1M-row set: name them)

    def __init__(self):
        self.stats: dict[str, int] = {}

    def tag(self, records: list[dict]) -> list[dict]:
        raise NotImplementedError

    def info(self) -> dict:
        return {}

    def count(self, key: str, k: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + k


def register_tagger(name: str):
    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def tagger_engine(engine, name: str, model: str, batch_size: int, **engine_kwargs):
    """`engine` when given, else the process's shared engine for `model` (hf batches as the tagger does)."""
    if name == "hf":
        engine_kwargs.setdefault("batch_size", batch_size)
    return engine if engine is not None else shared_engine(name, model, **engine_kwargs)


def tagger_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_tagger_class(name: str) -> type[Tagger]:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown tagger {name!r}; choose from {sorted(_REGISTRY)} (python -m synth taggers)")
    return _REGISTRY[name]


def get_tagger(name: str, **kwargs) -> Tagger:
    return get_tagger_class(name)(**kwargs)


def _load_all() -> None:
    from . import guard, judge, language, neighbors, reward  # noqa: F401  (each registers its taggers on import)
