"""The checkpoint browser (key c): list, detail, diff, save now (s), restore (r).

The state folds the probe's checkpoint messages (plain Python, no Textual, no torch). Files are
read in the console process by :mod:`tuidebug.ckpt`, imported only when the screen needs it, so
the console still starts without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
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


def _screen(state: CheckpointsState, send: SendCommand) -> Any:
    from tuidebug.console.screens.checkpoints import CheckpointsScreen

    return CheckpointsScreen(state, send)


def _dashboard_widget(state: CheckpointsState) -> Any:
    from tuidebug.console.widgets.checkpoint_summary import CheckpointSummary

    return CheckpointSummary(state)


EXTENSION = ConsoleExtension(
    name="checkpoints",
    make_state=CheckpointsState,
    key="c",
    title="Checkpoints",
    make_screen=_screen,
    make_dashboard_widget=_dashboard_widget,
)
