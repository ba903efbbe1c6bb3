"""RunModel: everything the console knows about a run, folded from wire messages.

Plain Python, no Textual: tests feed it messages and read it back. The app folds each batch of
messages as it arrives and redraws the screens at most once per frame, reading from here.
Histories are :class:`MinMaxHistory` buckets, so memory and drawing cost stay the same at step
100 and at step 10,000,000.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from tuidebug.console.extensions import extensions
from tuidebug.console.history import Marker, MinMaxHistory
from tuidebug.console.hparams_state import chart_label
from tuidebug.console.ranks_state import RanksState
from tuidebug.console.terminal_text import RankedText
from tuidebug.wire.hparam_messages import HparamChanged  # change markers
from tuidebug.wire.loop_messages import EPOCH, VALIDATION, LoopEvent  # epoch/validation markers
from tuidebug.wire.messages import (
    Boundary,
    DebuggerClosed,
    DebuggerOpened,
    HistoryDone,
    Message,
    ModelSeen,
    Notice,
    OptimizerSeen,
    Output,
    Paused,
    Resumed,
    RunInfo,
    ScriptError,
    Steps,
)

ENDED_STATES = ("finished", "crashed", "stopped")
RATE_WINDOW = 5.0  # seconds of step times that steps/s is computed over


class ScalarSeries:
    """One named scalar: its history and its last value."""

    __slots__ = ("history", "last", "last_step")

    def __init__(self) -> None:
        self.history = MinMaxHistory(capacity=256)
        self.last: float | None = None
        self.last_step = 0


class RunModel:
    """The console's state of one run."""

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.ext: dict[str, Any] = {e.name: e.make_state() for e in extensions()}
        """Each console extension's state, by extension name."""
        self.ranks: RanksState = self.ext["ranks"]
        """Every rank of a job (one for a single process); folded as the ``ranks`` extension."""
        self.loss = self.ranks.rank(0).loss
        """Rank 0's loss: the chart's history unless another rank or the band is chosen."""
        self.scalars: dict[str, ScalarSeries] = {}
        self.outputs = RankedText()
        """Every rank's output, each line with its rank (a job's output screen filters it)."""
        self.output = self.outputs.text(0)
        """Rank 0's output: all of it for a single process."""
        self.models: list[ModelSeen] = []
        self.optimizers: list[OptimizerSeen] = []
        self.boundary: Boundary | None = None
        self.error: ScriptError | None = None
        self.paused: Paused | None = None
        """Where and why the run is paused; None while it runs (in a job: while no rank is)."""
        self._paused_ranks: dict[int, Paused] = {}
        self.debugger: DebuggerOpened | None = None
        """The debugger that has the script's terminal, if any."""
        self.debuggers_opened = 0
        self.notices: list[Notice] = []
        """Notices not yet shown; the app takes them (live ones only, not history)."""
        self.step = 0
        self.steps_seen = 0
        self.last_loss: float | None = None
        self.last_time: float | None = None
        self.first_time: float | None = None
        self.history_loaded = False
        self.connection_lost = False
        self.version = 0
        """Bumped by every fold; views compare it to redraw only on change."""
        self._rate: deque[tuple[float, int]] = deque()
        # The newest loop marker, the loss's rewind count when it was made, and its parts by
        # kind: an epoch's end and a validation at one step share it ("ep 2+val").
        self._loop_marker: tuple[Marker, int, dict[str, str]] | None = None

    # --- folding -------------------------------------------------------------------------------

    def fold(self, messages: list[Message]) -> None:
        """Fold a batch of messages into the state."""
        for message in messages:
            if isinstance(message, Steps):
                self._fold_steps(message)
            elif isinstance(message, Output):
                self.outputs.feed(message.rank, message.data)
            elif isinstance(message, RunInfo):
                self.info = message
            elif isinstance(message, ModelSeen):
                self.models.append(message)
            elif isinstance(message, OptimizerSeen):
                self.optimizers.append(message)
            elif isinstance(message, Boundary):
                self.boundary = message
            elif isinstance(message, ScriptError):
                self.error = message
            elif isinstance(message, Paused):
                self.paused = self._paused_ranks[message.rank] = message
            elif isinstance(message, Resumed):
                self._paused_ranks.pop(message.rank, None)
                left = self._paused_ranks
                self.paused = left[max(left)] if left else None
            elif isinstance(message, DebuggerOpened):
                self.debugger = message
                self.debuggers_opened += 1
            elif isinstance(message, DebuggerClosed):
                self.debugger = None
            elif isinstance(message, Notice):
                if self.history_loaded:
                    self.notices.append(message)
            elif isinstance(message, HistoryDone):
                self.history_loaded = True
            elif isinstance(message, HparamChanged):
                self._mark_hparam(message)
            elif isinstance(message, LoopEvent):
                self._mark_loop(message)
        # Extensions fold after: the ranks state puts each rank's loss points (rank 0's are the
        # chart's) and restore markers in their order within the batch.
        for extension in extensions():
            self.ext[extension.name].fold(messages)
        self.version += 1

    def _fold_steps(self, message: Steps) -> None:
        if message.rank != 0:
            return  # the header and scalars follow rank 0; every rank's are in self.ranks
        for point in message.points:
            if point.loss is not None:
                self.last_loss = point.loss
            for name, value in point.scalars.items():
                series = self.scalars.get(name)
                if series is None:
                    series = self.scalars[name] = ScalarSeries()
                series.history.append(point.step, value)
                series.last = value
                series.last_step = point.step
        if message.points:
            last = message.points[-1]
            if self.first_time is None:
                self.first_time = message.points[0].time
            self.step = last.step
            self.last_time = last.time
            self.steps_seen += len(message.points)
            self._rate.append((last.time, self.steps_seen))
            while self._rate and last.time - self._rate[0][0] > RATE_WINDOW:
                self._rate.popleft()

    def _mark_hparam(self, message: HparamChanged) -> None:
        """Hyperparameters feature: mark a live change on the loss chart ("lr=0.001").

        Never behind the chart's last step: a marker there would rewind the axis (that is a
        restore's, and a restore has its own marker).
        """
        label = chart_label(message)
        last = self.loss.last_step
        if label is not None and message.rank == 0 and (last is None or message.step >= last):
            self.loss.mark(message.step, label)

    def _mark_loop(self, message: LoopEvent) -> None:
        """A framework's epoch end ("ep 2") or validation ("val") on the loss chart.

        Never a rewind: the event follows its step's point, but a point of a later step may
        come before it (both queued in one batch of the probe's link), so it is placed at its
        own step on the current branch (``rewind=False``).
        """
        part = loop_label(message)
        if part is None or message.rank != 0:
            return
        loss = self.loss
        shared = self._loop_marker
        if shared is not None and shared[0].step == message.step and shared[1] == loss.rewinds:
            parts = {**shared[2], message.kind: part}
            marker = loss.relabel(shared[0], _joined(parts))
        else:
            parts = {message.kind: part}
            marker = loss.mark(message.step, part, rewind=False)
        self._loop_marker = (marker, loss.rewinds, parts)

    def take_notices(self) -> list[Notice]:
        """The notices that arrived since the last call."""
        notices, self.notices = self.notices, []
        return notices

    def mark_connection_lost(self) -> None:
        """The supervisor went away (it exits when the run ends)."""
        self.connection_lost = True
        self.version += 1

    # --- derived figures -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """starting, running, finished, crashed, stopped; "connecting" before the first info."""
        if self.info is None:
            return "connecting"
        if self.info.state in ENDED_STATES:
            return self.info.state
        if self.connection_lost:
            return "lost"
        if self.error is not None and self.error.held:
            return "held"
        if self.paused is not None:
            return "paused"
        return self.info.state

    def debugger_place(self) -> str:
        """Where the open debugger runs, in words: "rank 1" in a job, else "the run"."""
        if self.debugger is not None and self.ranks.size > 1:
            return f"rank {self.debugger.rank}"
        return "the run"

    @property
    def ended(self) -> bool:
        """True once the script has exited."""
        return self.state in ENDED_STATES

    def steps_per_second(self) -> float | None:
        """Steps per second over the last few seconds of step times (None until known)."""
        if len(self._rate) < 2:
            return None
        (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the run started, up to its end if it ended."""
        if self.info is None:
            return 0.0
        end = self.info.ended if self.info.ended is not None else (now or time.time())
        return max(0.0, end - self.info.started)


def loop_label(event: LoopEvent) -> str | None:
    """The loss chart's label of a loop event: "ep 2" (the second epoch ended), "val"."""
    if event.kind == EPOCH:
        return f"ep {event.epoch}"
    if event.kind == VALIDATION:
        return "val"
    return None  # a kind of a newer probe


def _joined(parts: dict[str, str]) -> str:
    """One marker's label for the events at its step, the epoch first: "ep 2+val"."""
    return "+".join(parts[kind] for kind in sorted(parts, key=lambda kind: kind != EPOCH))
