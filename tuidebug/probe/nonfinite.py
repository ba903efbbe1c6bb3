"""NaN/Inf forensics: what the sampler keeps when a value first goes non-finite, and how it
names the module where it was born.

Kept for the debugger (a later feature): the inputs of the root model's last forward before the
non-finite value was seen (copied to the CPU at that moment, so the next batch cannot overwrite
them) and a CPU copy of the last parameters the sampler saw finite, with their step.

Locating works on the records of one sampled step:
- forward: module outputs in the order their forward finished (a child finishes before its
  parent), so the first non-finite output is the innermost module that produced it. On forensic
  steps the inputs are checked too: a module whose inputs were already non-finite did not
  produce the value; if the very first non-finite output had non-finite inputs, the batch did.
- backward: on forensic steps each module's output and inputs get a gradient hook, and each
  parameter a post-accumulate hook, fired in backward order. The first non-finite gradient is
  attributed to the module whose backward produced it: the module for which it is an *input*
  gradient (or a parameter gradient); a gradient that is non-finite where it enters a module's
  output came from outside the modules (a loss function written as plain tensor code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Culprit", "Forensics", "GradEvent", "locate_backward", "locate_forward", "to_cpu"]


@dataclass
class Culprit:
    """A module named as the origin of a non-finite value."""

    layer: int
    source: str  # "forward", "backward", "input" or "parameters"
    detail: str


@dataclass
class Forensics:
    """What the sampler kept at the first non-finite value (for the debugger)."""

    step: int
    source: str
    layer: int = -1
    name: str = ""
    detail: str = ""
    located: bool = False
    found_step: int = 0
    batch: Any = None
    """CPU copies of the (args, kwargs) of the root model's last forward before detection."""
    params: dict[str, Any] = field(default_factory=dict)
    """Qualified parameter name -> CPU tensor: the last parameters seen finite."""
    params_step: int | None = None
    """The step those parameters are from (their values at the start of that step)."""


@dataclass
class GradEvent:
    """One gradient seen in backward order: for module ``layer``'s "out"put, "in"put, or a
    "param"eter (``param`` index). ``group`` is the gradient tensor's id: hooks of the same
    tensor fire one after another with the same gradient object."""

    layer: int
    kind: str
    group: int
    param: int = -1
    nonfinite: int = 0


def locate_forward(
    order: list[int],
    out_nonfinite: list[int],
    in_nonfinite: list[int] | None,
    param_nonfinite: dict[int, bool],
) -> Culprit | None:
    """The first module whose forward produced a non-finite output.

    Args:
        order: Module index of each forward record, in finishing order.
        out_nonfinite: Non-finite count of each record's output.
        in_nonfinite: Non-finite count of each record's inputs (forensic steps), else None.
        param_nonfinite: Module index -> whether its own parameters were non-finite.
    """
    for i, (layer, bad) in enumerate(zip(order, out_nonfinite, strict=True)):
        if bad <= 0:
            continue
        if param_nonfinite.get(layer):
            return Culprit(layer, "parameters", "its parameters were already non-finite")
        if in_nonfinite is not None and in_nonfinite[i] > 0:
            earlier = any(b > 0 for b in out_nonfinite[:i])
            if not earlier:
                return Culprit(
                    layer,
                    "input",
                    f"its input was already non-finite ({in_nonfinite[i]} values): "
                    "the batch, or code outside any module",
                )
            continue
        return Culprit(layer, "forward", f"its output has {bad} non-finite values")
    return None


def locate_backward(events: list[GradEvent]) -> Culprit | None:
    """The module whose backward produced the first non-finite gradient (see module doc)."""
    first = next((i for i, e in enumerate(events) if e.nonfinite > 0), None)
    if first is None:
        return None
    group = events[first].group
    same = [e for e in events[first:] if e.group == group] if group else [events[first]]
    for kind in ("in", "param"):
        for e in same:
            if e.kind == kind:
                what = "input gradient" if kind == "in" else "parameter gradient"
                return Culprit(e.layer, "backward", f"its backward made a non-finite {what}")
    e = events[first]
    return Culprit(
        e.layer,
        "backward",
        "the gradient reaching its output was already non-finite (from code outside modules)",
    )


def to_cpu(obj: Any, depth: int = 0) -> Any:
    """A copy of ``obj`` with every tensor detached and copied to the CPU (nesting kept)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if depth > 8:
        return None
    if isinstance(obj, (list, tuple)):
        items = [to_cpu(o, depth + 1) for o in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, dict):
        return {k: to_cpu(v, depth + 1) for k, v in obj.items()}
    return obj
