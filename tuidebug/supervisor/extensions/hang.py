"""Hang detection: when no rank has advanced for too long, an alert naming the ranks behind, with
their stacks.

The classic hang of a job is a rank that skipped a collective (or called them in another
order): every other rank then waits inside its collective forever, and nothing says so until
NCCL's watchdog kills the job (10 minutes by default) or never (gloo: 30). In one process, the
same silence means the training thread is blocked (a data loader, a lock, a collective whose
peers are gone).

The supervisor already sees every rank's steps, so it watches them here at no cost to training:
when no rank's step has moved for the threshold, it gathers every rank's stacks
(``supervisor/stacks.py``: the probes' I/O threads, faulthandler for a rank whose Python does not
answer) and publishes one ``Alert`` (rule ``rank-hang``) naming the ranks at the lowest step,
with their training threads' stacks. One alert per hang; when steps flow again a ``Notice``
says so and the watch is armed again.

Threshold (``--hang-after SECONDS``, option ``hang_after``; 0 turns the watch off): when not
given, the larger of ``DEFAULT_HANG_AFTER`` and ``MEDIAN_FACTOR`` times the median step time.
300 s: legitimate silences between two boundaries last minutes (an evaluation pass, a
checkpoint save, the first step's compilation, a data loader's start of epoch), and 300 s is
still half of NCCL's default 10-minute collective timeout, so the alert comes while the ranks are
alive to be looked at. 20 times the median keeps a job of minute-long steps from an alert every
few steps.

Never while a rank is paused (by the console, a break condition, a collective pause), in a
debugger, held after an error, nor before the first step. A debugger the probe did not announce
(the script's own ``pdb.set_trace()``, noticed by its prompt) shows in the stacks: training
threads inside a debugger or the pause gate are waiting on purpose, and no alert is raised.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from typing import Any

from tuidebug.supervisor.extensions import SupervisorApi
from tuidebug.supervisor.stacks import StackGatherer
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.messages import (
    DebuggerClosed,
    DebuggerOpened,
    Message,
    Notice,
    Paused,
    RankEnded,
    Resumed,
    ScriptError,
    Steps,
)
from tuidebug.wire.stack_messages import Stacks, ThreadStack, thread_text

RULE = "rank-hang"
DEFAULT_HANG_AFTER = 300.0
MEDIAN_FACTOR = 20.0
MIN_HANG_AFTER = 1.0  # a smaller --hang-after is taken as this (the steps come in batches)
EVIDENCE_FRAMES = 4  # innermost frames of each behind rank's training thread: the alerts
# screen shows about ten lines of evidence, and the innermost frames are the ones that matter
# Where a training thread waits on purpose (file name endings): the pause gate, a debugger
# (pdb, ipdb, IPython's), a post-mortem hold.
DELIBERATE = (
    "tuidebug/probe/gate.py",
    "tuidebug/probe/debugger.py",
    "/bdb.py",
    "/pdb.py",
    "IPython/core/debugger.py",
)


class HangWatch:
    """The watch's state, folded from the messages the probes send (plain: tested as is)."""

    def __init__(self, hang_after: float | None) -> None:
        self.fixed = None if hang_after is None else max(MIN_HANG_AFTER, float(hang_after))
        self.steps: dict[int, int] = {}  # the newest step of each rank
        self.last_advance: float | None = None  # monotonic time a rank last advanced
        self.stopped: set[int] = set()  # ranks paused, in a debugger, or held
        self.ended: set[int] = set()
        self.alerted_at: float | None = None  # the silence's start, while an alert stands
        self._step_times: collections.deque[float] = collections.deque(maxlen=200)
        self._last_point: dict[int, tuple[int, float]] = {}  # rank -> (step, time) seen last

    def threshold(self) -> float:
        """Seconds of silence that make a hang."""
        if self.fixed is not None:
            return self.fixed
        if not self._step_times:
            return DEFAULT_HANG_AFTER
        return max(DEFAULT_HANG_AFTER, MEDIAN_FACTOR * statistics.median(self._step_times))

    def on_message(self, message: Message, now: float) -> bool:
        """Fold one probe's message; True when it ended a standing alert (steps flow again)."""
        rank = message.rank
        if isinstance(message, Steps) and message.points:
            return self._on_steps(rank, message, now)
        if isinstance(message, (Paused, DebuggerOpened)) or (
            isinstance(message, ScriptError) and message.held
        ):
            self.stopped.add(rank)
        elif isinstance(message, (Resumed, DebuggerClosed)):
            self.stopped.discard(rank)
            self._last_point.pop(rank, None)  # the pause is not a step's time
            if self.last_advance is not None:
                self.last_advance = now  # the silence counts from the resume
        elif isinstance(message, RankEnded):
            self.ended.add(rank)
        return False

    def _on_steps(self, rank: int, message: Steps, now: float) -> bool:
        first, last = message.points[0], message.points[-1]
        previous = self._last_point.get(rank)
        if previous is not None and last.step > previous[0]:
            # One figure a batch (not a point): the batch's mean step time.
            self._step_times.append((last.time - previous[1]) / (last.step - previous[0]))
        elif len(message.points) > 1 and last.step > first.step:
            self._step_times.append((last.time - first.time) / (last.step - first.step))
        self._last_point[rank] = (last.step, last.time)
        if last.step <= self.steps.get(rank, -1):
            return False
        self.steps[rank] = last.step
        self.stopped.discard(rank)  # stepping: not paused (a lost Resumed must not blind us)
        self.last_advance = now
        if self.alerted_at is not None:
            self.alerted_at = None
            return True
        return False

    def silent_for(self, now: float) -> float:
        return 0.0 if self.last_advance is None else now - self.last_advance

    def due(self, now: float) -> bool:
        """True when the job is hung and no alert stands for it."""
        return (
            self.last_advance is not None
            and self.alerted_at is None
            and not self.stopped
            and self.silent_for(now) >= self.threshold()
        )

    def behind(self, ranks: list[int]) -> list[int]:
        """Of ``ranks`` (the connected ones still going), those at the lowest step."""
        live = [r for r in ranks if r not in self.ended]
        if not live:
            return []
        lowest = min(self.steps.get(r, 0) for r in live)
        return sorted(r for r in live if self.steps.get(r, 0) == lowest)

    def excuse(self, now: float) -> None:
        """The ranks wait on purpose (a debugger nobody announced): look again in a while."""
        self.last_advance = now


def training_thread(stacks: Stacks) -> ThreadStack | None:
    return next((t for t in stacks.threads if t.training), None)


def waits_on_purpose(stacks: Stacks) -> bool:
    """The rank's training thread is in a debugger or in the pause gate."""
    thread = training_thread(stacks)
    if thread is None:
        return False
    return any(frame.file.endswith(DELIBERATE) for frame in thread.frames)


def where(stacks: Stacks | None) -> str:
    """The innermost frame of the training thread outside the standard library, as
    ``function (file.py:line)``."""
    thread = training_thread(stacks) if stacks is not None else None
    if thread is None or not thread.frames:
        return ""
    frame = thread.frames[-1]
    for candidate in reversed(thread.frames):
        if "/lib/python" not in candidate.file and not candidate.file.startswith("<"):
            frame = candidate
            break
    short = frame.file.rsplit("/", 1)[-1]
    return f"{frame.function} ({short}:{frame.line})"


def hang_alert(
    watch: HangWatch, ranks: list[int], stacks: dict[int, Stacks], silent: float
) -> Alert:
    """The alert for a hang of ``ranks`` (the connected ranks still going)."""
    behind = watch.behind(ranks)
    lowest = watch.steps.get(behind[0], 0) if behind else 0
    others = sorted({watch.steps.get(r, 0) for r in ranks if r not in behind})
    names = ", ".join(map(str, behind))
    rank_word = "rank" if len(behind) == 1 else "ranks"
    places = [f"rank {r} in {where(stacks.get(r))}" for r in behind if where(stacks.get(r))]
    limit = f"{watch.threshold():g}"
    if len(ranks) <= 1:
        message = f"no step for {silent:.0f} s (limit {limit} s): stuck after step {lowest}"
    else:
        ahead = f" (the others at {', '.join(map(str, others))})" if others else ""
        message = (
            f"no rank advanced for {silent:.0f} s (limit {limit} s): {rank_word} {names} "
            f"behind at step {lowest}{ahead}"
        )
    if places:
        message += "; " + "; ".join(places)
    evidence = []
    for rank in behind:
        found = stacks.get(rank)
        thread = training_thread(found) if found is not None else None
        if found is None or thread is None:
            evidence.append(f"rank {rank}: no stacks (it did not answer)")
            continue
        via = "" if found.source == "python" else f", via {found.source}"
        evidence.append(f"rank {rank} (pid {found.pid}{via}), its training thread:")
        evidence.extend(thread_text(thread, last=EVIDENCE_FRAMES)[1:])  # the rank line says whose
    return Alert(
        rank=behind[0] if behind else 0,
        step=lowest,
        rule=RULE,
        severity="error",
        message=message,
        why=(
            "Every rank stopped making progress. In a job, a rank that skipped a collective, or "
            "called them in another order, leaves the others waiting inside theirs forever; in "
            "one process, the training thread is blocked (a data loader, a lock, I/O, a "
            "collective whose peers are gone)."
        ),
        fix=(
            "Read where each rank is (w in the console, `tuidebug stacks RUN`): the collective "
            "the others wait in is the one the rank behind did not reach. Make every rank call "
            "the same collectives in the same order (no rank-dependent branch around one). "
            "--hang-after sets the threshold (0: off)."
        ),
        place=f"{rank_word} {names}",
        evidence="\n".join(evidence),
    )


async def run(supervisor: SupervisorApi) -> None:
    option: Any = supervisor.options.get("hang_after")
    if option is not None and float(option) <= 0:
        return
    watch = HangWatch(None if option is None else float(option))
    gatherer = StackGatherer(supervisor)

    def on_message(message: Message, from_probe: bool) -> None:
        if from_probe and watch.on_message(message, time.monotonic()):
            supervisor.publish(
                Notice(rank=message.rank, level="info", text=f"{RULE}: steps flow again")
            )

    supervisor.listen(on_message)
    while True:
        await asyncio.sleep(min(1.0, watch.threshold() / 4))
        now = time.monotonic()
        if not watch.due(now):
            continue
        ranks = sorted(supervisor.probe_pids())
        if not ranks:
            continue  # every probe gone: the script is ending, not hung
        began = watch.last_advance
        stacks = await gatherer.gather()
        if watch.last_advance != began or watch.stopped:
            continue  # steps came, or a pause, while the stacks were gathered
        behind = watch.behind(ranks)
        if behind and all(r in stacks and waits_on_purpose(stacks[r]) for r in behind):
            watch.excuse(time.monotonic())
            continue
        watch.alerted_at = began
        supervisor.publish(hang_alert(watch, ranks, stacks, watch.silent_for(time.monotonic())))
