"""Where is each rank now (key w): every thread's Python stack, of every rank.

Each time the screen is shown it asks the run for fresh stacks (the probes answer from their
I/O threads, so a rank stuck in a collective or in C code answers too; a rank whose Python does
not answer is dumped by faulthandler). Keys: ``r`` asks again, ``t`` shows the training threads
only (a job of many ranks), Escape goes back.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tuidebug.console.extensions import SendCommand
from tuidebug.console.stacks_state import StacksState
from tuidebug.wire.messages import Command
from tuidebug.wire.stack_messages import STACKS, stacks_text


class StacksScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,w", "back", "Back"),
        Binding("r", "refresh", "Ask again"),
        Binding("t", "training_only", "Training threads only"),
    ]
    DEFAULT_CSS = """
    StacksScreen #stacks-status { height: auto; padding: 0 1; background: $boost; }
    StacksScreen #stacks-scroll { height: 1fr; }
    StacksScreen #stacks-text { padding: 0 1; }
    """

    def __init__(self, state: StacksState, send: SendCommand) -> None:
        super().__init__()
        self.state = state
        self._send = send
        self.training_only = False
        self._shown: tuple[int, bool, int] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="stacks-status")
        with VerticalScroll(id="stacks-scroll"):
            yield Static(id="stacks-text")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        request = self.state.new_request()
        if request is not None:
            self._send(Command(name=STACKS, rank=-1, args={"id": request}))
        self.sync()

    def action_training_only(self) -> None:
        self.training_only = not self.training_only
        self.sync()

    def action_back(self) -> None:
        self.dismiss()

    def status_text(self) -> str:
        state = self.state
        if state.over:
            return "the run is over: there is nobody to ask (the stacks shown, if any, are old)"
        if state.asked is not None:
            waited = time.monotonic() - state.asked_at
            return f"asking every rank for its stacks... ({waited:.0f} s)"
        done = state.done
        if done is None:
            return "no stacks yet: r asks every rank" if not state.by_rank else ""
        if not done.ranks:
            return "no rank is connected (the script has not started, or it ended)"
        parts = [f"{len(done.ranks) - len(done.unanswered)} of {len(done.ranks)} rank(s)"]
        newest = max((s.time for s in state.by_rank.values()), default=0.0)
        if newest:
            parts.append(time.strftime("at %H:%M:%S", time.localtime(newest)))
        if done.unanswered:
            parts.append(f"no stacks from {', '.join(map(str, done.unanswered))}: {done.note}")
        return " · ".join(parts) + " · r: ask again · t: training threads only"

    def sync(self) -> None:
        waiting = int(time.monotonic() - self.state.asked_at) if self.state.asked else -1
        key = (self.state.version, self.training_only, waiting)  # the wait's seconds tick
        if key == self._shown:
            return
        self._shown = key
        self.query_one("#stacks-status", Static).update(Text(self.status_text()))
        parts = [
            stacks_text(self.state.by_rank[rank], training_only=self.training_only)
            for rank in sorted(self.state.by_rank)
        ]
        self.query_one("#stacks-text", Static).update(Text("\n\n".join(parts)))
