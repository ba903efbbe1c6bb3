"""The console's state of the live hyperparameters: the table of settable values and the
changes made so far (rank 0's: every rank applies the same command).

Plain Python (no Textual): the RunModel folds messages into it through the hparams extension;
the hyperparameters screen reads it and redraws when ``version`` moved.
"""

from __future__ import annotations

from collections.abc import Iterable

from tuidebug.wire.hparam_messages import HparamChanged, Hparams
from tuidebug.wire.messages import Message

MAX_EVENTS = 200


class HparamsState:
    """What the console knows of the run's live-settable values."""

    def __init__(self) -> None:
        self.table: Hparams | None = None
        self.events: list[HparamChanged] = []
        """The newest changes (sets, tunables, restores), oldest first."""
        self.version = 0

    def fold(self, messages: Iterable[Message]) -> None:
        changed = False
        for message in messages:
            if message.rank != 0:
                continue
            if isinstance(message, Hparams):
                self.table = message
                changed = True
            elif isinstance(message, HparamChanged):
                self.events.append(message)
                del self.events[:-MAX_EVENTS]
                changed = True
        if changed:
            self.version += 1


def chart_label(event: HparamChanged) -> str | None:
    """The loss chart's marker label for a change ("lr=0.001"); None for a restore (the
    restore has its own marker)."""
    if event.kind == "restore":
        return None
    return f"{event.name}={event.new}"
