"""The console's state of "where is each rank now": the newest stacks of every rank.

Plain Python (no Textual): the RunModel folds messages into it; the stacks screen reads it and
redraws when ``version`` moved.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

from tuidebug.wire.messages import Message, RunInfo
from tuidebug.wire.stack_messages import Stacks, StacksDone


class StacksState:
    def __init__(self) -> None:
        self.by_rank: dict[int, Stacks] = {}
        """The newest stacks of each rank (a request's answers, or a hang alert's)."""
        self.asked: str | None = None
        """The request this console is waiting on, until its ``StacksDone``."""
        self.done: StacksDone | None = None
        """The end of the newest request this console made."""
        self.asked_at = 0.0  # monotonic time of ``asked``
        self.over = False
        """The run ended: there is nobody to ask."""
        self.version = 0

    def fold(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if isinstance(message, Stacks):
                self.by_rank[message.rank] = message
            elif isinstance(message, StacksDone) and message.request == self.asked:
                self.done = message
                self.asked = None
            elif isinstance(message, RunInfo) and (message.ended is not None) != self.over:
                self.over = message.ended is not None
                self.asked = None
            else:
                continue
            self.version += 1

    def new_request(self) -> str | None:
        """A fresh request id, now the one this console waits on (None once the run is over)."""
        if self.over:
            return None
        self.asked = secrets.token_hex(4)
        self.asked_at = time.monotonic()
        self.version += 1
        return self.asked
