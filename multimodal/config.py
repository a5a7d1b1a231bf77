"""Dataclass configs to and from plain Python (what JSON, YAML and weights-only checkpoints hold)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def as_config(cls: type[C], value: C | dict) -> C:
    """``value`` as a ``cls``: a dict (from YAML, JSON or a checkpoint) is unpacked, a ``cls`` kept."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"expected a {cls.__name__} or a dict, not {type(value).__name__}")


def plain(value: Any) -> Any:
    """Dataclasses as dicts and tuples as lists, all the way down; anything not JSON-able is refused."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a value of type {type(value).__name__} cannot be written as JSON: {value!r}")
