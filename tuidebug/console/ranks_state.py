"""Every rank of a job, as the console sees it: per-rank figures, loss and the job's loss band.

Plain Python (no Textual): the RunModel folds messages into it (it is the ``ranks`` console
extension's state, see ``extensions/ranks.py``); the ranks screen, the header and the loss
chart read it. For a single process there is one rank, 0, and everything here is what the
dashboard always showed: rank 0's loss history is the chart's (``RunModel.loss``).

Per rank: its step, steps/s (over the last ``RATE_WINDOW`` seconds of its own step times), last
loss, state, GPU (from its allocator's figures, when it has CUDA) and the median of its last
``STEP_TIMES_KEPT`` step times. What the screen calls a *straggler* is a rank whose median step
time is more than ``STRAGGLER_RATIO`` (1.5) times the median of the other live ranks' medians
(the others', so that a job of two ranks can have one); the figure is that ratio ("slow x1.8").
Ranks that meet in a collective every step (DDP's gradient all-reduce) all take the same time
from boundary to boundary: the fast ones wait, inside ``backward``, for the slow one. So when
the step times say nothing and the probes' step-time breakdown (``StepPhases``) is known, the
same test is made on each rank's *own work*: its step time less its time in ``backward``
(data, forward, optimizer and the rest are its own), and the mark says so ("slow x1.8 (own
work)").

The job's *band* is one history of every rank's loss, step by step: a step goes in once every
live rank has passed it, with one value per rank, so each bucket's min and max are the ranks'
min and max (the chart's bars) and its mean is their mean; the smoothed line, over values
``size`` times as many, uses the weight ``SMOOTHING ** (1 / size)`` per value, so it smooths
over as many steps as a rank's own line. A rank that restores a checkpoint starts a new
*branch*: the band waits until every live rank is on it, and points of an older branch stay out.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from tuidebug.console.history import MinMaxHistory
from tuidebug.wire.checkpoint_messages import CheckpointRestored
from tuidebug.wire.gpu_messages import AllocatorStats, OomMoment
from tuidebug.wire.messages import (
    DebuggerClosed,
    DebuggerOpened,
    Message,
    Paused,
    RankEnded,
    Resumed,
    RunInfo,
    ScriptError,
    Steps,
)
from tuidebug.wire.phase_messages import StepPhases

__all__ = [
    "BAND",
    "LAUNCHER",
    "STRAGGLER_RATIO",
    "RankState",
    "RanksState",
    "Straggler",
    "rank_label",
]

LAUNCHER = -1
"""The rank of the job's own output and notices (torchrun, the supervisor), not of one rank."""
BAND = None
"""``RanksState.shown`` for the band of every rank (any other value is a rank)."""
RATE_WINDOW = 5.0  # seconds of step times that steps/s is computed over
STEP_TIMES_KEPT = 64  # a rank's latest step durations; the median ignores a pause or two
PHASE_BATCHES_KEPT = 8  # StepPhases batches (about 4 s) for a rank's own work per step
STRAGGLER_RATIO = 1.5
WAIT_FACTOR = 10.0  # a rank with no step for this many median step times is waiting...
WAIT_MIN = 2.0  # ... and for at least this many seconds
BAND_PENDING_LIMIT = 4096  # steps held for a rank that lags (past it the oldest go in as they are)
SMOOTHING = 0.9  # MinMaxHistory's default weight, per step
ENDED_RUN_STATES = ("finished", "crashed", "stopped")


def rank_label(rank: int) -> str:
    """How a rank is named on screen: "rank 1", or "torchrun" for the launcher's own."""
    return "torchrun" if rank == LAUNCHER else f"rank {rank}"


class Straggler(NamedTuple):
    """A rank well behind the others: how many times slower, and by which measure."""

    ratio: float
    basis: str  # "step time", or "own work" (step time less backward: see the module doc)

    def label(self) -> str:
        suffix = " (own work)" if self.basis == "own work" else ""
        return f"slow x{self.ratio:.1f}{suffix}"


class RankState:
    """One rank: the figures of its ranks-screen row and its own loss history."""

    __slots__ = (
        "_announced_rewind",
        "_rate",
        "branch",
        "debugger",
        "end_how",
        "end_text",
        "error",
        "exit_code",
        "gpu",
        "last_loss",
        "last_time",
        "loss",
        "own_work",
        "paused",
        "rank",
        "step",
        "step_times",
        "steps_seen",
    )

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.loss = MinMaxHistory()
        self.step = 0
        self.steps_seen = 0
        self.last_loss: float | None = None
        self.last_time: float | None = None
        self.step_times: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self.paused: Paused | None = None
        self.debugger: DebuggerOpened | None = None
        """The debugger open in this rank (ipdb from ``d``, its own breakpoint(), a
        post-mortem), also while the console's terminal is back from it (Ctrl-])."""
        self.error: ScriptError | None = None
        self.end_how = ""
        """How the rank ended, as the supervisor says ("finished", "crashed", "stopped",
        "torn-down", "died"); "" while it lives."""
        self.end_text = ""
        self.exit_code: int | None = None
        self.gpu: int | None = None
        self.branch = 0
        """Bumped when the rank's steps go back (a checkpoint restore)."""
        self._announced_rewind = False
        self._rate: deque[tuple[float, int]] = deque()
        self.own_work: deque[tuple[int, float]] = deque(maxlen=PHASE_BATCHES_KEPT)
        """(steps, seconds of them not in backward) of the latest ``StepPhases`` batches."""

    # --- folding -------------------------------------------------------------------------------

    def fold_steps(self, message: Steps) -> None:
        points = message.points
        if not points:
            return
        loss = self.loss
        step, last_time = self.step, self.last_time
        times = self.step_times
        for point in points:
            if self.steps_seen and point.step < step:
                if not self._announced_rewind:
                    self.branch += 1  # steps went back without a restore message
                self._announced_rewind = False
                last_time = None
            elif last_time is not None and point.step > step:
                times.append((point.time - last_time) / (point.step - step))
            if point.loss is not None:
                loss.append(point.step, point.loss)
                self.last_loss = point.loss
            step, last_time = point.step, point.time
            self.steps_seen += 1
        self.step, self.last_time = step, last_time
        assert last_time is not None
        rate = self._rate
        if not rate:  # the first batch: its first point starts the window
            rate.append((points[0].time, self.steps_seen - len(points) + 1))
        rate.append((last_time, self.steps_seen))
        while rate and last_time - rate[0][0] > RATE_WINDOW:
            rate.popleft()

    def mark_restore(self, message: CheckpointRestored) -> bool:
        """Mark a restore (or --resume) on this rank's loss; True when it starts a new branch.

        The probe sends the restore before the new branch's points, so the marker normally
        announces the step going back. If points of the new branch came first (the history
        already went back), a second rewind would split the axis: no marker then.
        """
        if not message.ok:
            return False
        last = self.loss.last_step
        if last is None or last >= message.from_step:
            self.loss.mark(message.step, message.kind)
        if self.steps_seen and message.step < self.step and not self._announced_rewind:
            self.branch += 1
            self._announced_rewind = True
            return True
        return False

    # --- reading -------------------------------------------------------------------------------

    def steps_per_second(self) -> float | None:
        """Steps per second over the last few seconds of this rank's step times."""
        if len(self._rate) < 2:
            return None
        (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def median_step_time(self) -> float | None:
        """Seconds per step, the median of the latest step times (None before two steps)."""
        return statistics.median(self.step_times) if self.step_times else None

    def own_step_time(self) -> float | None:
        """Seconds per step outside ``backward`` over the latest phase batches (None: no
        breakdown from this rank)."""
        steps = sum(n for n, _ in self.own_work)
        return sum(t for _, t in self.own_work) / steps if steps else None

    @property
    def alive(self) -> bool:
        """Still training: not ended, not failed (a held error counts as failed)."""
        return not self.end_how and self.error is None

    def state(self, now: float | None, run_state: str) -> str:
        """What the rank is doing, in a few words: "running", "paused", "in debugger" (ipdb
        open in it: ``d`` goes back to it), "waiting 12s" (no step for ``WAIT_FACTOR`` median
        step times: most likely inside a collective, waiting for another rank), "held" (raised;
        waiting for a post-mortem or a release), "dead, exit 1", "finished", "stopped",
        "torn down", "ended"."""
        if self.end_how:
            if self.end_how == "finished":
                return "finished"
            if self.end_how == "torn-down":
                return "torn down"
            if self.end_how == "stopped":
                return "stopped"
            if self.exit_code is not None:
                return f"dead, exit {self.exit_code}"
            return "dead (signal)"
        if self.debugger is not None and run_state not in ENDED_RUN_STATES:
            return "in debugger"
        if self.error is not None:
            # Python exits with status 1 after an uncaught exception.
            return (
                "held" if self.error.held and run_state not in ENDED_RUN_STATES else "dead, exit 1"
            )
        if run_state in ENDED_RUN_STATES:
            return "finished" if run_state == "finished" else "ended"
        if self.paused is not None:
            return "paused"
        median = self.median_step_time()
        if self.last_time is not None and median is not None:
            silent = (now if now is not None else time.time()) - self.last_time
            if silent > max(WAIT_MIN, WAIT_FACTOR * median):
                return f"waiting {silent:.0f}s"
        return "running" if self.steps_seen else "starting"


class RanksState:
    """Every rank of the run (one for a single process). See the module docstring."""

    def __init__(self) -> None:
        self.ranks: dict[int, RankState] = {0: RankState(0)}
        self.world_size = 1
        """Ranks of the job as the run says (``RunInfo.world_size``) or as seen, if more."""
        self.run_state = "starting"
        """The run's state (``RunInfo.state``): a rank's own state is "finished" once it is."""
        self.band = MinMaxHistory()
        self.shown: int | None = 0
        """What the header and the loss chart show: a rank, or ``BAND`` (every rank's band)."""
        self.version = 0
        self._band_started = False
        self._pending: dict[int, list[float]] = {}
        self._frontier: int | None = None  # the last step put in the band
        self._branch = 0

    @property
    def size(self) -> int:
        """How many ranks the job has (1 for a single process)."""
        return max(self.world_size, len(self.ranks))

    def rank(self, rank: int) -> RankState:
        state = self.ranks.get(rank)
        if state is None:
            state = self.ranks[rank] = RankState(rank)
        return state

    # --- folding -------------------------------------------------------------------------------

    def fold(self, messages: Iterable[Message]) -> None:
        """Fold a batch in order (a restore marker must land between the points around it)."""
        changed = False
        for message in messages:
            if message.rank < 0 and not isinstance(message, RunInfo):
                continue  # the job's own (launcher output, notices): no rank's state
            if isinstance(message, Steps):
                state = self.rank(message.rank)
                state.fold_steps(message)
                if self.size > 1:
                    self._fold_band(state, message)
            elif isinstance(message, RunInfo):
                self.world_size = max(1, getattr(message, "world_size", 1))
                self.run_state = message.state
            elif isinstance(message, Paused):
                self.rank(message.rank).paused = message
            elif isinstance(message, Resumed):
                self.rank(message.rank).paused = None
            elif isinstance(message, DebuggerOpened):
                self.rank(message.rank).debugger = message
            elif isinstance(message, DebuggerClosed):
                self.rank(message.rank).debugger = None
            elif isinstance(message, ScriptError):
                self.rank(message.rank).error = message
            elif isinstance(message, RankEnded):
                state = self.rank(message.rank)
                state.end_how = message.how or "crashed"
                state.end_text = message.text
                state.exit_code = message.exit_code
                state.paused = state.debugger = None
            elif isinstance(message, CheckpointRestored):
                state = self.rank(message.rank)
                if state.mark_restore(message) and state.branch > self._branch and self.size > 1:
                    self._new_branch(state.branch, message)
            elif isinstance(message, AllocatorStats):
                devices = [d for d in message.devices if d.allocated] or message.devices
                if devices:
                    self.rank(message.rank).gpu = devices[0].device
            elif isinstance(message, OomMoment):
                self.rank(message.rank).gpu = message.device
            elif isinstance(message, StepPhases):
                per_step = message.per_step()
                own = sum(per_step.values()) - per_step["backward"]
                self.rank(message.rank).own_work.append((message.steps, own * message.steps))
            else:
                continue
            changed = True
        if changed:
            if self.size > 1 and self._band_started:
                self._flush_band()
            self.version += 1

    def _fold_band(self, state: RankState, message: Steps) -> None:
        if not self._band_started:
            self._band_started = True
            self.band.smoothing = SMOOTHING ** (1.0 / self.size)
        if state.branch > self._branch:
            self._new_branch(state.branch, None)
        elif state.branch < self._branch:
            return  # points of the branch a restore left
        pending, frontier = self._pending, self._frontier
        for point in message.points:
            if point.loss is None or (frontier is not None and point.step <= frontier):
                continue
            values = pending.get(point.step)
            if values is None:
                pending[point.step] = [point.loss]
            else:
                values.append(point.loss)

    def _new_branch(self, branch: int, restore: CheckpointRestored | None) -> None:
        """A rank went back (a restore): the band starts over from there, with a marker."""
        self._branch = branch
        self._pending.clear()
        self._frontier = None
        if restore is not None:
            self.band.mark(restore.step, restore.kind)

    def _flush_band(self) -> None:
        """Put in the band every step that each live rank (on the band's branch) has passed."""
        pending = self._pending
        if not pending:
            return
        live = [s for s in self.ranks.values() if s.alive and s.steps_seen]
        if any(s.branch < self._branch for s in live):
            return  # a rank that has not restored yet: it will soon
        reached = min((s.step for s in live), default=max(pending))
        steps = sorted(pending)
        if len(steps) > BAND_PENDING_LIMIT:
            reached = max(reached, steps[len(steps) - BAND_PENDING_LIMIT])
        append = self.band.append
        for step in steps:
            if step > reached:
                break
            for value in pending.pop(step):
                append(step, value)
            self._frontier = step

    # --- reading -------------------------------------------------------------------------------

    def ordered(self) -> list[RankState]:
        return [self.ranks[r] for r in sorted(self.ranks)]

    def state_of(self, rank: int, now: float | None = None) -> str:
        """A rank's state in a few words (``RankState.state``), given how the run is."""
        return self.rank(rank).state(now, self.run_state)

    def shown_history(self) -> MinMaxHistory:
        """The loss history the chart draws now."""
        if self.shown is BAND:
            return self.band
        return self.rank(self.shown).loss

    def cycle_shown(self) -> int | None:
        """Next view of the chart: rank 0, 1, ..., the last, then the band, then rank 0."""
        ranks = sorted(set(range(self.size)) | set(self.ranks))
        if self.shown is BAND:
            self.shown = ranks[0]
        else:
            later = [r for r in ranks if r > self.shown]
            self.shown = later[0] if later else BAND
        self.version += 1
        return self.shown

    def shown_label(self) -> str:
        """What the header says is shown: "rank 1/4" or "ranks 0-3 band"."""
        if self.shown is BAND:
            ranks = sorted(set(range(self.size)) | set(self.ranks))
            return f"ranks {ranks[0]}-{ranks[-1]} band"
        return f"rank {self.shown}/{self.size}"

    def trouble(self) -> str:
        """A few words for the header when some rank needs a look: "1 down, straggler 2"."""
        states = self.ordered()
        parts = []
        down = sum(1 for s in states if not s.alive and s.end_how != "finished")
        if down:
            parts.append(f"{down} down")
        slow = [str(s.rank) for s in states if self.straggler(s.rank) is not None]
        if slow:
            parts.append(f"straggler{'s' if len(slow) > 1 else ''} {', '.join(slow)}")
        return ", ".join(parts)

    def straggler(self, rank: int) -> Straggler | None:
        """Whether this rank is well behind the other live ranks (see the module docstring):
        by its median step time, else by its own work; None when not (or not known yet)."""
        ratio = self._ratio(rank, RankState.median_step_time)
        if ratio is not None and ratio > STRAGGLER_RATIO:
            return Straggler(ratio, "step time")
        ratio = self._ratio(rank, RankState.own_step_time, lockstep=True)
        return Straggler(ratio, "own work") if ratio and ratio > STRAGGLER_RATIO else None

    def _ratio(
        self, rank: int, measure: Callable[[RankState], float | None], lockstep: bool = False
    ) -> float | None:
        """This rank's measure over the other live ranks' median of it; with ``lockstep``,
        only while the ranks' step times are even (else None)."""
        state = self.ranks.get(rank)
        if state is None or not state.alive:
            return None
        live = [s for s in self.ranks.values() if s.alive]
        if lockstep:
            times = [m for s in live if (m := s.median_step_time()) is not None]
            if len(times) < 2 or max(times) > STRAGGLER_RATIO * min(times):
                return None
        own = measure(state)
        others = [m for s in live if s.rank != rank and (m := measure(s)) is not None]
        if own is None or not others:
            return None
        median = statistics.median(others)
        return own / median if median > 0 else None
