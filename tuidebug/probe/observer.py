"""The hooks a probe extension can implement (Lightning-callback style: all no-ops here).

An extension (a module in ``tuidebug/probe/extensions/`` with ``install(probe, options)``)
adds an ``Observer`` with ``probe.add_observer`` and, for console commands that must run on
the training thread, actions with ``probe.gate.add_action``. The probe calls every observer's
``on_boundary`` at every step boundary, so it must decide with an integer compare whether this
step concerns it (cockpit's ``schedule(step) -> bool``) before touching any tensor.
"""

from __future__ import annotations

from typing import Any

from tuidebug.wire.messages import StepPoint


class Observer:
    """Base class for the probe's extensions; override only what you need."""

    def on_model(self, name: str, module: Any) -> None:
        """A model was found by the auto hooks or given to ``tuidebug.attach``."""

    def on_optimizer(self, optimizer: Any) -> None:
        """An optimizer was found or given."""

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        """Step ``step`` ended (``now``: time.perf_counter()); return a reason to pause."""
        return None

    def on_late_value(self, point: StepPoint) -> str | None:
        """A point whose values were on the device has landed; return a reason to pause."""
        return None

    def close(self) -> None:
        """Remove every hook this observer installed (called once, in a finally)."""
