"""The console's state of "where is each rank now": the newest stacks of every rank.

Plain Python (no Textual): the RunModel folds messages into it; the stacks screen reads it and
redraws when ``version`` moved.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from tuidebug.wire.messages import Message
from tuidebug.wire.stack_messages import Stacks, StacksDone


class StacksState:
    def __init__(self) -> None:
        self.by_rank: dict[int, Stacks] = {}
        """The newest stacks of each rank (a request's answers, or a hang alert's)."""
        self.asked: str | None = None
        """The request this console is waiting on, until its ``StacksDone``."""
        self.done: StacksDone | None = None
        """The end of the newest request this console made."""
        self.version = 0

    def fold(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if isinstance(message, Stacks):
                self.by_rank[message.rank] = message
            elif isinstance(message, StacksDone) and message.request == self.asked:
                self.done = message
                self.asked = None
            else:
                continue
            self.version += 1

    def new_request(self) -> str:
        """A fresh request id, now the one this console waits on."""
        self.asked = secrets.token_hex(4)
        self.version += 1
        return self.asked
