"""The pause gate: the one place where the probe blocks the training thread.

Commands from consoles arrive on the probe's I/O thread; ``post`` queues them and raises one
flag, ``attention``. The training thread checks that flag at every step boundary (the gate's
whole cost while nothing is asked of it) and, when it is up, runs ``at_boundary``: it applies
the commands, evaluates break conditions, runs actions that must happen on the training thread
(checkpoints, the debugger) and, if the run should pause, waits on an event (no busy wait)
until a console resumes it.

Commands: pause, resume, step (one more step, then pause), run-to (args: step), pause-every
(args: every; 0 turns it off), break-on (args: condition), clear-breaks, debug (while paused),
release (let a script that raised exit), plus any registered with ``add_action``.

In a job of several ranks (``collective``), a rank never pauses on its own: a rank that stopped
alone would leave the others inside their next collective. The supervisor (supervisor/ranks.py)
turns the console's pause, step and run-to into ``pause-at S``, one step S for every rank; the
gate takes the target on the I/O thread and answers at once whether it is still ahead (a
``PauseAck``), then pauses at the boundary of S. What would pause one rank by itself (a break
condition, a first NaN) is sent to the supervisor as a ``PauseRequest`` instead.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from tuidebug.probe import debugger
from tuidebug.probe.conditions import Condition, ConditionError, parse_condition
from tuidebug.wire.messages import (
    PAUSE_AT,
    Command,
    DebuggerClosed,
    DebuggerOpened,
    Message,
    Notice,
    PauseAck,
    Paused,
    PauseRequest,
    Resumed,
    StepPoint,
)

log = logging.getLogger("tuidebug.probe")

Action = Callable[[Command], None]
WAIT_SLICE = 0.5  # seconds per wait, so signals (Ctrl-C, stop) are handled promptly


class GateHost(Protocol):
    """What the gate needs of its probe: the step count and a way to report. A protocol, so the
    gate (a lower layer: the probe owns one) does not depend on the probe module."""

    step: int

    def send(self, message: Message) -> None: ...


class Gate:
    """Pause state, break conditions and queued commands of one probe."""

    def __init__(self, probe: GateHost) -> None:
        self._probe = probe
        self.attention = False
        """Checked at every boundary: True when anything needs the training thread."""
        self._inbox: collections.deque[Command] = collections.deque()
        self._wake = threading.Event()
        self._pause_requested: str | None = None  # the reason, when a pause is pending
        self._pause_at: int | None = None
        self._pause_every = 0
        self.conditions: list[Condition] = []
        self.paused = False
        self.debugger_open = False
        self._actions: dict[str, Action] = {}
        self.collective = False
        """True in a job of several ranks: pauses are the supervisor's to arrange."""
        self._target: int | None = None  # pause-at: the job's common step to pause at
        self._target_reason = ""
        self._target_lock = threading.Lock()

    # --- from any thread ------------------------------------------------------------------------

    def post(self, command: Command) -> None:
        """Queue a console's command (called on the I/O thread)."""
        if command.name == PAUSE_AT:
            self._take_target(command)  # answered now: the supervisor waits on every rank
        self._inbox.append(command)
        self.attention = True
        self._wake.set()

    def add_action(self, name: str, action: Action) -> None:
        """Run ``action`` on the training thread when a command ``name`` arrives."""
        self._actions[name] = action

    def request_pause(self, reason: str) -> None:
        """Pause at the next boundary (the probe itself asks, e.g. on a first NaN)."""
        if self.collective:
            self._ask_for_pause(reason)
            return
        self._pause_requested = reason
        self.attention = True

    def _ask_for_pause(self, reason: str) -> None:
        """In a job: not this rank's alone to pause, the supervisor pauses every rank."""
        self._probe.send(PauseRequest(step=self._probe.step, reason=reason))

    def add_condition(self, text: str) -> Condition:
        """Add a break condition (raises ConditionError with a one-line reason)."""
        condition = parse_condition(text)
        self.conditions.append(condition)
        self.attention = True
        return condition

    def _take_target(self, command: Command) -> None:
        """Take the job's step to pause at and say at once whether this rank is still before it.

        The target is set before the step is read, and the training thread bumps the step before
        it reads ``attention``: so a rank that reports a step below the target will see the
        target at that boundary. A rank at or past it says so, and the supervisor picks a later
        step for all."""
        target = _int(command.args.get("step"))
        seq = _int(command.args.get("seq")) or 0
        if target is None:
            return
        with self._target_lock:
            self._target = target
            self._target_reason = command.args.get("reason") or f"paused at step {target}"
            self.attention = True
            now = self._probe.step
            accepted = now < target or (now == target and self.paused)
            if now > target:
                self._target = None
        self._probe.send(PauseAck(step=now, target=target, seq=seq, accepted=accepted))

    # --- on the training thread -----------------------------------------------------------------

    def at_boundary(self, point: StepPoint | None) -> None:
        """Apply commands, check conditions, pause if asked (``point``: None if still on device)."""
        self._drain()
        if point is not None and self.conditions:
            self.check_conditions(point)
        step = self._probe.step
        if self.debugger_open:
            # A debugger we only heard of (the script's own) is over once a step ends.
            self.debugger_open = False
            self._probe.send(DebuggerClosed(step=step, continued=True))
        if self._target is not None and step >= self._target:
            with self._target_lock:
                hit, self._target = step == self._target, None
            if hit:
                self._pause_requested = self._target_reason
        if self._pause_at is not None and step >= self._pause_at:
            self._pause_at = None
            self._pause_requested = self._pause_requested or f"reached step {step}"
        if self._pause_every and step % self._pause_every == 0:
            self._pause_requested = self._pause_requested or f"every {self._pause_every} steps"
        if self._pause_requested is not None:
            reason, self._pause_requested = self._pause_requested, None
            self._hold(reason)
        self._update_attention()

    def check_conditions(self, point: StepPoint) -> None:
        """Evaluate break conditions on a point (also called when a late CUDA value lands)."""
        for condition in self.conditions:
            if condition.holds(point):
                now = self._probe.step
                note = "" if point.step == now else f" (seen at step {now})"
                reason = f"{condition.text} at step {point.step}{note}"
                if self.collective:
                    self._ask_for_pause(reason)
                    return
                self._pause_requested = reason
                self.attention = True
                return

    def hold_after_error(self, tb: object) -> None:
        """The script raised: wait for "debug" (post-mortem) or "release", then return."""
        self.paused = True
        while True:
            for command in self._take():
                if command.name == "release":
                    return
                if command.name == "debug":
                    self._post_mortem(tb)
                    return
            self._wake.wait(WAIT_SLICE)
            self._wake.clear()

    # --- internals ------------------------------------------------------------------------------

    def _take(self) -> list[Command]:
        commands = []
        while self._inbox:
            commands.append(self._inbox.popleft())
        return commands

    def _drain(self) -> None:
        for command in self._take():
            self._apply(command, paused=False)

    def _apply(self, command: Command, paused: bool) -> str | None:
        """Apply one command; returns "resume" when a paused run should go on."""
        name, args = command.name, command.args
        step = self._probe.step
        if name == "pause":
            # Idempotent: a console's key toggles by sending "resume" when it sees the run
            # paused. A "pause" that crossed the run's own pause (a non-finite loss, a break)
            # on the wire must leave the run paused, not resume it.
            if not paused:
                self._pause_requested = "paused from the console"
        elif name == "resume":
            with self._target_lock:
                self._target = None
            return "resume" if paused else None
        elif name == PAUSE_AT:
            # Taken on the I/O thread already; a later step than this one means go on to it.
            target = self._target
            return "resume" if paused and target is not None and target > step else None
        elif name == "step":
            self._pause_at = step + 1
            return "resume" if paused else None
        elif name == "run-to":
            target = _int(args.get("step"))
            if target is None or target <= step:
                self._notice("warning", f"run to step {args.get('step')!r}: not a later step")
                return None
            self._pause_at = target
            self._notice("info", f"running to step {target}")
            return "resume" if paused else None
        elif name == "pause-every":
            every = _int(args.get("every"))
            if every is None or every < 0:
                self._notice("warning", f"pause every {args.get('every')!r}: not a step count")
            else:
                self._pause_every = every
                self._notice("info", f"pausing every {every} steps" if every else "pause-every off")
        elif name == "break-on":
            try:
                condition = self.add_condition(args.get("condition", ""))
            except ConditionError as error:
                self._notice("error", str(error))
            else:
                self._notice("info", f"break on: {condition.text}")
        elif name == "clear-breaks":
            self.conditions.clear()
            self._notice("info", "break conditions cleared")
        elif name == "debug":
            if not paused:
                self._notice("warning", "pause the run first (p), then open the debugger (d)")
            elif self._debug():
                return "resume"
        elif name in self._actions:
            self._actions[name](command)
        else:
            log.debug("unknown command %r ignored", name)
        return None

    def _hold(self, reason: str) -> None:
        """Block the training thread until a console resumes the run."""
        probe = self._probe
        frame = debugger.user_frame()
        self._frame = frame
        self.paused = True
        probe.send(Paused(step=probe.step, reason=reason, where=debugger.where(frame)))
        try:
            while True:
                resume = False
                for command in self._take():
                    if self._apply(command, paused=True) == "resume":
                        resume = True
                if resume:
                    return
                self._wake.wait(WAIT_SLICE)
                self._wake.clear()
        finally:
            self.paused = False
            self._frame = None
            probe.send(Resumed(step=probe.step))

    _frame: FrameType | None = None

    def _debug(self) -> bool:
        """ipdb at the user's frame; True when the person continued the run."""
        probe = self._probe
        frame = self._frame
        if frame is None:
            self._notice("error", "no frame of the script's own to debug in")
            return False
        probe.send(DebuggerOpened(step=probe.step, kind="at-step", where=debugger.where(frame)))
        continued = False
        try:
            continued = debugger.open_at(frame, probe.step, lambda *_: None)
        finally:
            probe.send(DebuggerClosed(step=probe.step, continued=continued))
        return continued

    def _post_mortem(self, tb: object) -> None:
        probe = self._probe
        probe.send(DebuggerOpened(step=probe.step, kind="post-mortem"))
        try:
            debugger.post_mortem(tb, lambda *_: None)  # type: ignore[arg-type]
        finally:
            probe.send(DebuggerClosed(step=probe.step, continued=False))

    def notify_breakpoint(self, event: str, where: str, continued: bool | None) -> None:
        """The script's own breakpoint() opened or closed a debugger."""
        probe = self._probe
        if event.startswith("opened"):
            self.debugger_open = True
            self.attention = True
            probe.send(DebuggerOpened(step=probe.step, kind="breakpoint", where=where))
        elif self.debugger_open:
            self.debugger_open = False
            probe.send(DebuggerClosed(step=probe.step, continued=bool(continued)))

    def _notice(self, level: str, text: str) -> None:
        self._probe.send(Notice(step=self._probe.step, level=level, text=text))

    def _update_attention(self) -> None:
        # Under the target lock: the I/O thread's pause-at must not be lost between this read
        # and this write (a rank that missed its target would run past the others).
        with self._target_lock:
            self._set_attention()

    def _set_attention(self) -> None:
        self.attention = bool(
            self._inbox
            or self._pause_requested
            or self._pause_at is not None
            or self._target is not None
            or self._pause_every
            or self.conditions
            or self.debugger_open
        )


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
