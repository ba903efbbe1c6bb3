"""Describing shapes: the short texts of the layer table and of each sample (``128×256``).

Pure functions, no state but a cache of shape texts. ``describe`` is public (tests and the
console's tables use its texts); ``_primary`` picks the tensor of an output the activation
statistics describe; ``_first_shape`` is the cheap key under which a layer's description is
reused (see ``_describe`` in ``hooks.py``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn

_SHAPE_CACHE_LIMIT = 4096

_shape_strings: dict[tuple[int, ...], str] = {}


def _shape(t: torch.Tensor) -> str:
    shape = tuple(t.shape)
    text = _shape_strings.get(shape)
    if text is None:
        text = "×".join(map(str, shape)) if shape else "()"
        if len(_shape_strings) < _SHAPE_CACHE_LIMIT:
            _shape_strings[shape] = text
    return text


def describe(obj: Any, depth: int = 0) -> str:
    """A short text of the tensor shapes in ``obj``: ``128×256``, ``(4×8, {'h': 4×8})``."""
    if isinstance(obj, torch.Tensor):
        return _shape(obj)
    if depth > 3:
        return "…"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(describe(o, depth + 1) for o in obj[:8])
        more = ", …" if len(obj) > 8 else ""
        return f"({inner}{more})" if isinstance(obj, tuple) else f"[{inner}{more}]"
    if isinstance(obj, dict):
        items = list(obj.items())[:8]
        inner = ", ".join(f"{k}: {describe(v, depth + 1)}" for k, v in items)
        return "{" + inner + (", …" if len(obj) > 8 else "") + "}"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.fields(obj)[:8]
        inner = ", ".join(f"{f.name}={describe(getattr(obj, f.name), depth + 1)}" for f in fields)
        return f"{type(obj).__name__}({inner})"
    if obj is None:
        return "None"
    if isinstance(obj, (int, float, bool, str)):
        return type(obj).__name__
    return type(obj).__name__


def _primary(obj: Any, depth: int = 0) -> torch.Tensor | None:
    """The first tensor of a (nested) output: the one the activation statistics describe."""
    if isinstance(obj, torch.Tensor):
        return obj
    if depth > 3:
        return None
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _primary(o, depth + 1)
            if t is not None:
                return t
    elif isinstance(obj, dict):
        for o in obj.values():
            t = _primary(o, depth + 1)
            if t is not None:
                return t
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            t = _primary(getattr(obj, f.name), depth + 1)
            if t is not None:
                return t
    return None


def _first_shape(args: tuple[Any, ...]) -> Any:
    """The shape of the first positional argument when it is a tensor (a cheap cache key)."""
    first = args[0] if args else None
    return first.shape if isinstance(first, torch.Tensor) else type(first)


def _fmt_module(module: nn.Module) -> str:
    return type(module).__name__
