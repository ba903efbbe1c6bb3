"""The hook object a script holds: ``dbg = tuidebug.attach(model, optimizer)``.

Outside ``tuidebug run`` there is no probe, and ``attach`` returns an inert ``Hook`` whose
methods return at once. Under ``tuidebug run`` it returns the live probe's hook, which makes
``dbg.step()`` the step boundary and names the models and optimizers explicitly.
"""

from __future__ import annotations

from typing import Any


class Hook:
    """The inert hook: every method is a no-op, so a script can keep its calls for good."""

    active = False

    def step(self, loss: Any = None, **scalars: Any) -> None:
        """Mark a step boundary, logging ``loss`` and any named scalars (tensors or numbers)."""

    def watch(self, *objects: Any) -> None:
        """Add models or optimizers for the probe to follow."""

    def detach(self) -> None:
        """Stop following the run: remove every hook the probe installed."""


_INERT = Hook()


def attach(*objects: Any, **options: Any) -> Hook:
    """Return the run's hook, following ``objects`` (models, optimizers, schedulers, scalers).

    Under ``tuidebug run`` this is the live probe; anywhere else an inert hook.
    """
    from tuidebug.probe import runtime

    probe = runtime.current()
    if probe is None:
        return _INERT
    return probe.attach(*objects, **options)
