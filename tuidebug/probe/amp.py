"""Mixed precision under the probe: ``torch.amp.GradScaler`` seen with no code change.

The probe wraps two methods of the ``GradScaler`` class for as long as it lives (put back by
:meth:`ScalerHooks.remove`, when still ours; ``torch.cuda.amp.GradScaler`` inherits them):
- ``scale(loss)``: the scalar a script backpropagates is then ``loss * scale``; the probe
  reports ``loss`` itself (the probe's ``on_backward`` swaps the one for the other);
- ``step(optimizer)``: it calls ``optimizer.step()`` only when the scaled gradients are finite.
  A step it skips ends with no optimizer step, so the probe ends it here (a skipped step is
  still a step of the loop), flagged ``amp_skipped = 1``: the layer sampler and its tripwire
  read that flag and do not take the scaler's inf gradients for a NaN bug (the checks see the
  same from the window's missing optimizer step: checks/groups/gradients.py).

Both note the scaler itself: ``Probe.scalers`` are the ones checkpoints save and restore.

The scale is the ``amp_scale`` scalar of each step: the one its gradients were scaled by
(``scaler._scale``, a tensor on the scaler's device: read without a sync, like the loss).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

SKIPPED = "amp_skipped"
"""The scalar that flags a step the grad scaler skipped (1.0) or applied (0.0)."""
SCALE = "amp_scale"
"""The scalar of the loss scale a step's gradients were scaled by."""


def scaler_class() -> type | None:
    """``torch.amp.GradScaler`` (None where torch has none)."""
    import torch

    cls = getattr(getattr(torch, "amp", None), "GradScaler", None)
    return cls if isinstance(cls, type) else None


class ScalerEvents(Protocol):
    """What the wrappers report to (the probe; auto.py's ``StepEvents`` includes it)."""

    def on_scaled(self, scaler: Any, loss: Any, scaled: Any) -> None: ...

    def on_scaler_step(self, scaler: Any, optimizer: Any, begin: bool) -> None: ...


class ScalerHooks:
    """The GradScaler wrappers of one probe (see the module docstring)."""

    def __init__(self, probe: ScalerEvents) -> None:
        self._cls = scaler_class()
        self._originals: dict[str, Any] = {}
        self._patched: dict[str, Any] = {}
        if self._cls is None:
            return
        for name, make in (("scale", _make_scale), ("step", _make_step)):
            original = self._cls.__dict__.get(name)
            if original is None:
                continue
            self._originals[name] = original
            self._patched[name] = make(original, probe)
            setattr(self._cls, name, self._patched[name])

    def remove(self) -> None:
        """Put the scaler's methods back (only those still ours)."""
        if self._cls is None:
            return
        for name, original in self._originals.items():
            if self._cls.__dict__.get(name) is self._patched[name]:
                setattr(self._cls, name, original)
        self._originals = {}
        self._patched = {}


def _make_scale(original: Any, probe: ScalerEvents) -> Any:
    @functools.wraps(original)
    def scale(self: Any, outputs: Any, *args: Any, **kwargs: Any) -> Any:
        scaled = original(self, outputs, *args, **kwargs)
        probe.on_scaled(self, outputs, scaled)
        return scaled

    return scale


def _make_step(original: Any, probe: ScalerEvents) -> Any:
    @functools.wraps(original)
    def step(self: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        probe.on_scaler_step(self, optimizer, True)
        try:
            return original(self, optimizer, *args, **kwargs)
        finally:
            probe.on_scaler_step(self, optimizer, False)

    return step
