"""Replaying the last forward (and backward) to find where a non-finite value was born.

Why replay: the loss is checked at every step, but statistics are only taken on sampled steps.
When the loss of an unsampled step goes non-finite, the step's activations are gone; waiting for
the next (forensic) sample is too late, because ``optimizer.step()`` has by then spread the NaN
into the weights and the first module with NaN *weights* (usually the first layer) would be
named. So the sampler keeps a reference to the inputs of the root model's last forward and, at
the first non-finite value and *before the optimizer updates the weights*, runs that forward
again with a hook on every module that counts non-finite outputs and inputs. When the forward is
finite but a gradient was not, it also runs the backward of the replayed forward with the output
gradient the real backward got, through ``torch.autograd.grad`` (which does not touch ``.grad``),
with a gradient hook on each module's outputs and inputs.

What the replay protects (:func:`preserved`): the CPU random number generator (the replay uses
the state saved at the start of the original forward, so dropout draws the same masks, and the
state is put back afterwards), every buffer of the model (BatchNorm running statistics) and the
train/eval mode (never changed). What it cannot protect: Python-side module state (a call
counter, a cache, a list a module appends to, a hook of someone else's that logs) sees one more
call; inputs the script modified in place after the forward see their new values; autocast or
other context managers active during the original forward are not active in the replay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.modules import module as _module_globals
from torch.nn.modules.module import register_module_forward_hook

from tuidebug.probe.nonfinite import GradEvent

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ForwardRecord", "nonfinite_count", "preserved", "replay_backward", "replay_forward"]

_global_with_kwargs: dict[int, bool] = getattr(
    _module_globals, "_global_forward_hooks_with_kwargs", {}
)


def nonfinite_count(t: torch.Tensor) -> int:
    """How many values of ``t`` are NaN or ±inf (0 for non-float tensors). Syncs: replay only."""
    if not t.is_floating_point() or t.numel() == 0:
        return 0
    d = t.detach()
    return int(torch.count_nonzero(d - d))  # x - x: 0 when finite, NaN for NaN and ±inf


def tensors_in(obj: Any, out: list[torch.Tensor], depth: int = 0) -> list[torch.Tensor]:
    """Every tensor in a (nested) tuple, list or dict, into ``out``; three levels deep."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif depth <= 3:
        if isinstance(obj, (tuple, list)):
            for o in obj:
                tensors_in(o, out, depth + 1)
        elif isinstance(obj, dict):
            for o in obj.values():
                tensors_in(o, out, depth + 1)
    return out


@contextmanager
def preserved(root: nn.Module, rng_at_forward: torch.Tensor | None) -> Iterator[None]:
    """Run the body as if it had not run: CPU RNG and the model's buffers are restored.

    ``rng_at_forward``: the CPU RNG state saved when the original forward began; the body runs
    from it so random ops (dropout) replay the same draws.
    """
    rng_now = torch.get_rng_state()
    with torch.no_grad():
        buffers = [(b, b.detach().clone()) for b in root.buffers()]
    try:
        if rng_at_forward is not None:
            torch.set_rng_state(rng_at_forward)
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        torch.set_rng_state(rng_now)


class ForwardRecord:
    """One module's output in the replayed forward (in finishing order)."""

    __slots__ = ("in_bad", "layer", "out_bad")

    def __init__(self, layer: int, out_bad: int, in_bad: int) -> None:
        self.layer = layer
        self.out_bad = out_bad
        self.in_bad = in_bad


def _hooked(hook: Any) -> Any:
    """A global forward hook (with kwargs) and a function that removes it completely."""
    handle = register_module_forward_hook(hook, with_kwargs=True)

    def remove() -> None:
        # torch's handle forgets the global "with kwargs" flag: remove its entry ourselves.
        _global_with_kwargs.pop(handle.id, None)
        handle.remove()

    return remove


def replay_forward(
    root: nn.Module, args: Any, kwargs: Any, index: dict[int, int]
) -> list[ForwardRecord]:
    """Run ``root(*args, **kwargs)`` without grad, counting non-finite values per module."""
    records: list[ForwardRecord] = []

    def hook(module: nn.Module, m_args: Any, m_kwargs: Any, output: Any) -> None:
        layer = index.get(id(module))
        if layer is None:
            return
        out_bad = sum(nonfinite_count(t) for t in tensors_in(output, []))
        in_bad = sum(nonfinite_count(t) for t in tensors_in((m_args, m_kwargs), []))
        records.append(ForwardRecord(layer, out_bad, in_bad))

    remove = _hooked(hook)
    try:
        with torch.no_grad():
            root(*args, **kwargs)
    finally:
        remove()
    return records


def replay_backward(
    root: nn.Module,
    args: Any,
    kwargs: Any,
    out_grad: torch.Tensor | None,
    index: dict[int, int],
    param_layer: dict[int, int],
) -> tuple[list[GradEvent], list[tuple[int, str]]]:
    """Run the forward with grad and its backward from ``out_grad`` (the gradient the real
    backward gave the root's primary output; None: ones), recording gradient events in
    backward order.

    Returns the events (module outputs and inputs) and ``(layer, parameter name)`` of every
    parameter whose gradient is non-finite. ``.grad`` of the parameters is not touched.
    """
    events: list[GradEvent] = []
    handles: list[Any] = []

    def on_grad(layer: int, kind: str, grad: torch.Tensor) -> None:
        events.append(GradEvent(layer, kind, id(grad), nonfinite=nonfinite_count(grad)))

    def hook(module: nn.Module, m_args: Any, m_kwargs: Any, output: Any) -> None:
        layer = index.get(id(module))
        if layer is None:
            return
        for kind, tensors in (
            ("out", tensors_in(output, [])),
            ("in", tensors_in((m_args, m_kwargs), [])),
        ):
            for t in tensors:
                if t.requires_grad and t.is_floating_point():
                    handles.append(t.register_hook(lambda g, k=kind: on_grad(layer, k, g)))

    remove = _hooked(hook)
    try:
        with torch.enable_grad():
            output = root(*args, **kwargs)
    finally:
        remove()
    try:
        primary = next((t for t in tensors_in(output, []) if t.requires_grad), None)
        if primary is not None and not bool(torch.isfinite(primary.detach()).all()):
            # This forward went non-finite where the forward-only replay did not: the model
            # is not replayable (Python-side state); a backward from here would blame it.
            return events, []
        if out_grad is None and primary is not None:
            out_grad = torch.ones_like(primary)
        if primary is None or out_grad is None or primary.shape != out_grad.shape:
            return events, []
        named = [(n, p) for n, p in root.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(
            primary, [p for _, p in named], grad_outputs=out_grad, allow_unused=True
        )
        bad = [
            (param_layer.get(id(p), -1), n)
            for (n, p), g in zip(named, grads, strict=True)
            if g is not None and nonfinite_count(g) > 0
        ]
        # Backward order is roughly the reverse of registration order.
        bad.reverse()
        return events, bad
    finally:
        for h in handles:
            h.remove()
