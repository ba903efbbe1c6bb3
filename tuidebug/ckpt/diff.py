"""Compare two state dicts: which keys are missing or extra, which shapes and dtypes differ, and
how far each tensor moved (‖a−b‖/‖b‖, largest first).

"Does this checkpoint fit my model" and "what changed between step 1000 and step 2000" are the
two questions people answer with throwaway scripts; both are this one function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_CHUNK = 1 << 22  # elements per chunk when computing norms (bounds the float64 temporaries)


@dataclass
class Mismatch:
    """A key present on both sides whose shape or dtype differs (``a`` = checkpoint side)."""

    key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    a_dtype: str
    b_dtype: str


@dataclass
class TensorChange:
    """Relative change ‖a−b‖/‖b‖ of one tensor (``inf`` when b is zero and a is not)."""

    key: str
    rel_change: float
    numel: int


@dataclass
class StateDiff:
    """The result of a comparison. ``a`` is the checkpoint, ``b`` the reference (live model).

    ``missing``: keys the reference has and the checkpoint lacks. ``unexpected``: keys only in
    the checkpoint. ``problems``: other blocking issues (optimizer group sizes...); ``notes``:
    things worth knowing that do not block a restore.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[Mismatch] = field(default_factory=list)
    dtype_mismatches: list[Mismatch] = field(default_factory=list)
    changes: list[TensorChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def fits(self) -> bool:
        """True when nothing blocks loading ``a`` into ``b``."""
        return not (
            self.missing
            or self.unexpected
            or self.shape_mismatches
            or self.dtype_mismatches
            or self.problems
        )

    def merge(self, other: StateDiff, prefix: str = "") -> None:
        """Add ``other``'s findings, with ``prefix`` in front of its keys."""

        def p(key: str) -> str:
            return f"{prefix}{key}"

        self.missing += [p(k) for k in other.missing]
        self.unexpected += [p(k) for k in other.unexpected]
        self.shape_mismatches += [
            Mismatch(p(m.key), m.a_shape, m.b_shape, m.a_dtype, m.b_dtype)
            for m in other.shape_mismatches
        ]
        self.dtype_mismatches += [
            Mismatch(p(m.key), m.a_shape, m.b_shape, m.a_dtype, m.b_dtype)
            for m in other.dtype_mismatches
        ]
        self.changes += [TensorChange(p(c.key), c.rel_change, c.numel) for c in other.changes]
        self.changes.sort(key=_change_order)
        self.problems += other.problems
        self.notes += other.notes
        self.compared += other.compared

    def summary(self) -> str:
        """One line: what does not fit, or that it fits."""
        if self.fits:
            return f"fits: {self.compared} tensors match in keys, shapes and dtypes"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[0]})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {self.unexpected[0]})")
        if self.shape_mismatches:
            m = self.shape_mismatches[0]
            parts.append(
                f"{len(self.shape_mismatches)} shape mismatches (e.g. {m.key}: "
                f"{list(m.a_shape)} vs {list(m.b_shape)})"
            )
        if self.dtype_mismatches:
            m = self.dtype_mismatches[0]
            parts.append(
                f"{len(self.dtype_mismatches)} dtype mismatches (e.g. {m.key}: "
                f"{m.a_dtype} vs {m.b_dtype})"
            )
        parts += self.problems[:2]
        return "does not fit: " + "; ".join(parts)


def _change_order(c: TensorChange) -> tuple[float, str]:
    v = c.rel_change
    return (-(v if not math.isnan(v) else math.inf), c.key)


def dtype_name(dtype: Any) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists of tensors into ``{"a.b.0.c": tensor}``; other leaves dropped."""
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "<root>"] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten_tensors(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def relative_change(a: Any, b: Any) -> float:
    """‖a−b‖/‖b‖ in float64, chunked so that a 1 GB tensor does not need 2 GB of temporaries."""
    import torch

    fa = a.detach().reshape(-1)
    fb = b.detach().reshape(-1)
    if fa.device != fb.device:
        fa = fa.cpu()
        fb = fb.cpu()
    num = 0.0
    den = 0.0
    for start in range(0, fa.numel(), _CHUNK):
        ca = fa[start : start + _CHUNK].to(torch.float64)
        cb = fb[start : start + _CHUNK].to(torch.float64)
        num += float(torch.sum((ca - cb) ** 2))
        den += float(torch.sum(cb * cb))
    if num == 0.0:
        return 0.0
    if den == 0.0:
        return math.inf
    return math.sqrt(num) / math.sqrt(den)


def diff_state_dicts(
    a: Mapping[str, Any], b: Mapping[str, Any], *, compute_change: bool = True
) -> StateDiff:
    """Compare state dict ``a`` (checkpoint) with ``b`` (reference / live model).

    Nested dicts are flattened with dotted keys. With ``compute_change`` the relative change of
    every tensor whose shape matches is computed (complex and bool tensors included, as float64).
    """
    import torch

    fa = flatten_tensors(a)
    fb = flatten_tensors(b)
    d = StateDiff()
    d.missing = [k for k in fb if k not in fa]  # in state-dict order, as the model lists them
    d.unexpected = [k for k in fa if k not in fb]
    for key in fa:
        if key not in fb:
            continue
        ta, tb = fa[key], fb[key]
        d.compared += 1
        mm = Mismatch(
            key, tuple(ta.shape), tuple(tb.shape), dtype_name(ta.dtype), dtype_name(tb.dtype)
        )
        if mm.a_shape != mm.b_shape:
            d.shape_mismatches.append(mm)
            continue
        if mm.a_dtype != mm.b_dtype:
            d.dtype_mismatches.append(mm)
        if compute_change:
            if ta.is_complex() or tb.is_complex():
                ta = torch.view_as_real(ta.resolve_conj()) if ta.is_complex() else ta
                tb = torch.view_as_real(tb.resolve_conj()) if tb.is_complex() else tb
                if ta.shape != tb.shape:
                    continue
            try:
                rc = relative_change(ta, tb)
            except (RuntimeError, TypeError) as exc:
                d.notes.append(f"{key}: change not computed ({str(exc).splitlines()[0][:80]})")
                continue
            d.changes.append(TensorChange(key, rc, int(ta.numel())))
    d.changes.sort(key=_change_order)
    return d
