"""The one live probe of this process, if ``tuidebug run`` installed one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuidebug.probe.hook import Hook


class _ProbeLike:
    def attach(self, *objects: object, **options: object) -> Hook:  # pragma: no cover
        raise NotImplementedError


_current: _ProbeLike | None = None


def current() -> _ProbeLike | None:
    """The installed probe, or ``None`` outside ``tuidebug run``."""
    return _current


def install(probe: _ProbeLike | None) -> None:
    """Make ``probe`` the process's probe (``None`` uninstalls)."""
    global _current
    _current = probe
