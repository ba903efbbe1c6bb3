"""What a framework's integration may ask of the probe's side: the ``Owner`` interface.

:class:`tuidebug.integrations.Integrations` implements it; ``lightning.py``, ``hf.py`` and
``accelerate.py`` depend only on this, so the package that installs them and the integrations
stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tuidebug.probe.extensions.checkpoints import CheckpointsObserver
    from tuidebug.probe.hook_api import Hook
    from tuidebug.probe.probe import Probe


class Owner(Protocol):
    probe: Probe

    @property
    def live(self) -> bool:
        """Whether callbacks should still drive the probe."""
        ...

    def wrap_method(self, cls: type, name: str, make: Callable[[Any], Any]) -> None:
        """Replace ``cls.<name>`` by ``make(original)`` while the probe lives."""
        ...

    def wrap_init(self, cls: type, after: Callable[[Any], None]) -> None:
        """Run ``after(instance)`` after ``cls.__init__`` while the probe lives."""
        ...

    def attach(self, *objects: Any) -> Hook:
        """``tuidebug.attach`` for a trainer's model and optimizers."""
        ...

    def checkpoints(self) -> CheckpointsObserver | None:
        """The probe's checkpoints extension, if installed."""
        ...

    def loop_event(
        self,
        kind: str,
        step: int,
        epoch: int,
        framework: str,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """An epoch ended or a validation ran (a ``LoopEvent`` for the consoles' chart)."""
        ...
