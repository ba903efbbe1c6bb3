"""The one live probe of this process, if ``tuidebug run`` installed one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tuidebug.probe.hook_api import Hook


class _ProbeLike(Protocol):
    def attach(self, *objects: Any, **options: Any) -> Hook: ...


_current: _ProbeLike | None = None


def current() -> _ProbeLike | None:
    """The installed probe, or ``None`` outside ``tuidebug run``."""
    return _current


def install(probe: _ProbeLike | None) -> None:
    """Make ``probe`` the process's probe (``None`` uninstalls)."""
    global _current
    _current = probe
