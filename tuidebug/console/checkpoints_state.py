"""The console's state of the run's checkpoints: saves, restores, the live diff, the config.

Plain Python (no Textual, no torch): the RunModel folds messages into it through the checkpoints
extension; the checkpoints screen and the dashboard's summary line read it and redraw when
``version`` moved. It lives apart from the extension so that they depend on it, not on the
extension that assembles them.
"""

from __future__ import annotations

from collections.abc import Iterable

from tuidebug.wire.checkpoint_messages import (
    CheckpointConfig,
    CheckpointDiff,
    CheckpointRestored,
    CheckpointSaved,
)
from tuidebug.wire.messages import Message, RunInfo


class CheckpointsState:
    """What the console knows of the run's checkpoints."""

    def __init__(self) -> None:
        self.config: CheckpointConfig | None = None
        self.saves: list[CheckpointSaved] = []
        self.restores: list[CheckpointRestored] = []
        self.live_diff: CheckpointDiff | None = None
        self.run_cwd: str | None = None
        self.last_event: CheckpointSaved | CheckpointRestored | None = None
        """The newest save or restore (the dashboard line shows it)."""
        self.version = 0
        """Bumped when anything here changed (views compare it to redraw only on change)."""

    @property
    def folder(self) -> str | None:
        """The run's checkpoint folder, once the probe said where it is."""
        return self.config.folder if self.config is not None and self.config.folder else None

    @property
    def last_save(self) -> CheckpointSaved | None:
        return self.saves[-1] if self.saves else None

    @property
    def last_restore(self) -> CheckpointRestored | None:
        return self.restores[-1] if self.restores else None

    def fold(self, messages: Iterable[Message]) -> None:
        changed = False
        for message in messages:
            if isinstance(message, CheckpointConfig):
                if message.rank == 0:
                    self.config = message
                    changed = True
            elif isinstance(message, CheckpointSaved):
                self.saves.append(message)
                del self.saves[:-200]
                self.last_event = message
                changed = True
            elif isinstance(message, CheckpointRestored):
                if message.rank == 0:
                    self.restores.append(message)
                    del self.restores[:-200]
                    self.last_event = message
                    changed = True
            elif isinstance(message, CheckpointDiff):
                if message.rank == 0:
                    self.live_diff = message
                    changed = True
            elif isinstance(message, RunInfo):
                self.run_cwd = message.cwd
        if changed:
            self.version += 1
