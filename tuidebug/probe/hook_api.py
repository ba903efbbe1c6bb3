"""The hook's interface: what a script may call on the object ``tuidebug.attach`` returns.

``Hook`` is also the inert hook (every method a no-op). It lives apart from ``attach`` so that
the runtime, which types the live probe's ``attach``, and the probe, whose live hook subclasses
it, depend on this small module and not on ``tuidebug.probe.hook``, which depends on them.
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
