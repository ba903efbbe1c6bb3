"""The one live probe of this process, if ``tuidebug run`` installed one; and its tunables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from tuidebug.probe.hook_api import Hook

T = TypeVar("T")


class _ProbeLike(Protocol):
    def attach(self, *objects: Any, **options: Any) -> Hook: ...


class TunableTable(Protocol):
    """Where ``dbg.tunable`` reads the script's live-tunable values (the live-hyperparameters
    extension, probe/extensions/hparams.py, owns the one table of a run)."""

    def value(self, name: str, default: T) -> T: ...


_current: _ProbeLike | None = None

tunables: TunableTable | None = None
"""Set while a probe with the hyperparameters extension runs; None otherwise, and then
``dbg.tunable`` returns its default (one attribute read: the inert hook stays nearly free)."""


def current() -> _ProbeLike | None:
    """The installed probe, or ``None`` outside ``tuidebug run``."""
    return _current


def install(probe: _ProbeLike | None) -> None:
    """Make ``probe`` the process's probe (``None`` uninstalls)."""
    global _current
    _current = probe


def install_tunables(table: TunableTable | None) -> None:
    """Make ``table`` the one ``dbg.tunable`` reads (``None`` uninstalls)."""
    global tunables
    tunables = table
