"""The hook's interface: what a script may call on the object ``tuidebug.attach`` returns.

``Hook`` is also the inert hook (every method a no-op). It lives apart from ``attach`` so that
the runtime, which types the live probe's ``attach``, and the probe, whose live hook subclasses
it, depend on this small module and not on ``tuidebug.probe.hook``, which depends on them.

It also holds the one table of the script's live-tunable values (``dbg.tunable``), installed
by the probe's live-hyperparameters extension (probe/extensions/hparams.py): here, so that
``tunable`` reads a global of its own module and the inert hook stays nearly free.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class TunableTable(Protocol):
    """Where ``dbg.tunable`` reads the script's live-tunable values."""

    def value(self, name: str, default: T) -> T: ...


_tunables: TunableTable | None = None  # None outside a run: tunable() returns its default


def install_tunables(table: TunableTable | None) -> None:
    """Make ``table`` the one ``dbg.tunable`` reads (``None`` uninstalls)."""
    global _tunables
    _tunables = table


def tunables() -> TunableTable | None:
    """The installed table, if a probe with the hyperparameters extension runs."""
    return _tunables


class Hook:
    """The inert hook: every method is a no-op, so a script can keep its calls for good."""

    active = False

    def step(self, loss: Any = None, **scalars: Any) -> None:
        """Mark a step boundary, logging ``loss`` and any named scalars (tensors or numbers)."""

    def watch(self, *objects: Any) -> None:
        """Add models or optimizers for the probe to follow."""

    def detach(self) -> None:
        """Stop following the run: remove every hook the probe installed."""

    def tunable(self, name: str, default: T) -> T:
        """The current value of the script's own live-tunable ``name`` (``default`` until a
        console sets it: ``h`` in the console). Read it each step where it is used, e.g.
        ``model.drop.p = dbg.tunable("dropout", 0.1)``; a change made from the console is seen
        from the next step on. A float, int, bool or str can be set; outside ``tuidebug run``
        this returns ``default``.
        """
        table = _tunables
        return default if table is None else table.value(name, default)
