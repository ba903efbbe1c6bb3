"""The ranks of a ``torchrun`` job, seen from their one supervisor.

``RankCoordinator`` makes every pause collective. A rank that stopped alone would leave the
others inside their next collective (an all-reduce in backward waits for every rank), so the
console's pause, step and run-to, and a break condition or first NaN on any rank, become one
target step S for every rank:

1. The supervisor picks S = (the highest step it knows of any rank) + ``MARGIN`` and sends every
   rank ``pause-at S`` (with a sequence number).
2. Each rank's I/O thread takes the target at once and answers ``PauseAck``: accepted when the
   rank is still before S (or paused at S), refused when it is already past it.
3. When every connected rank has answered: if any refused, the supervisor picks S' past the
   highest step reported and starts again (a rank paused at S short of S' simply goes on to
   S'); else every rank pauses at the boundary of S, and nobody is left inside a collective.

``n`` is ``pause-at S+1`` for ranks all paused at S; resume releases them all; a debugger
closed with "continue" on one rank resumes all. Saving and restoring are collective too: every
rank is paused at one step first (and resumed after, if it was running); a save goes to every
rank (the checkpoints extension writes the model once, on rank 0) and, once rank 0 says where
it wrote, every rank writes its own RNG states beside it (``rank-rng-save``); a restore loads
the checkpoint on every rank and then each rank's own RNG states (``rank-rng-restore``).
Commands that every rank applies the same way (break-on, clear-breaks, pause-every: a multiple
of K is the same step on every rank) go to every rank unchanged.

``RankOutput`` keeps each rank's output in the run's log with its lines marked ``[rank R] ``
(the launcher's own as ``[torchrun] ``); ``marked_output`` reads such a tail back as one
``Output`` message per rank, so a console attaching late gets what a live one got.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import BinaryIO

from tuidebug.probe.extensions.rank_rng import RNG_RESTORE, RNG_SAVE
from tuidebug.wire.messages import (
    PAUSE_AT,
    Command,
    Notice,
    Output,
    PauseAck,
    RankEnded,
    ScriptError,
)

MARGIN = 2
"""Steps past the fastest rank's last known step: its report is up to one link interval old
(50-250 ms), and a refused target costs one more round; two steps keep that rare."""

LAUNCHER_RANK = -1  # Output and Notice of the job itself, not of one rank
PARTIAL_LINE_LIMIT = 4096  # a line this long without a newline is logged as it is

SAVE, RESTORE = "ckpt-save", "ckpt-restore"  # the console's (probe/extensions/checkpoints.py)
WAIT_FOR_DEBUGGER = frozenset({"resume", "step", "run-to", SAVE, RESTORE, "debug"})
"""The console's commands a job refuses while one rank's debugger is open (on_console)."""

Send = Callable[[int, Command], None]  # rank (-1: every rank), command
Say = Callable[[str, str], None]  # level, text


class RankCoordinator:
    """Pause, step, run-to and resume for every rank together; each rank's end."""

    def __init__(self, send: Send, say: Say) -> None:
        self._send = send
        self._say = say
        self.connected: set[int] = set()
        self.steps: dict[int, int] = {}  # the newest step known of each rank
        self.paused: dict[int, int] = {}  # rank -> the step it is paused at
        self.seq = 0
        self.target: int | None = None  # the step every rank is to pause at
        self.reason = ""
        self._acks: dict[int, PauseAck] = {}
        self.failed: int | None = None  # the first rank that raised
        self._exits: dict[int, RankEnded] = {}  # what each rank's probe said as it ended
        self._errors: set[int] = set()
        self._action: Command | None = None  # a save or restore waiting for the common pause
        self._resume_after = False  # the ranks ran before that save or restore: go on after
        self._saving = False  # a save sent: waiting for rank 0's CheckpointSaved
        # The rank whose debugger is open: its training thread is inside ipdb (or the
        # script's own pdb), so the others must not go on without it (see on_console).
        self.debugging: int | None = None

    # --- from the probes ----------------------------------------------------------------------

    def on_hello(self, rank: int) -> None:
        self.connected.add(rank)
        if self.target is not None:  # a rank that joins late pauses with the others
            self._send(rank, self._pause_at_command())

    def on_step(self, rank: int, step: int) -> None:
        if step > self.steps.get(rank, 0):
            self.steps[rank] = step

    def on_paused(self, rank: int, step: int) -> None:
        self.paused[rank] = step
        self.on_step(rank, step)
        if self.all_paused():
            steps = sorted(set(self.paused.values()))
            where = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps}"
            self._say("info", f"all {len(self.paused)} ranks paused at {where}")
            if self._action is not None and len(steps) == 1:
                action, self._action = self._action, None
                self._act(action)

    def on_resumed(self, rank: int) -> None:
        self.paused.pop(rank, None)

    def on_ack(self, rank: int, ack: PauseAck) -> None:
        if ack.seq != self.seq or self.target is None:
            return  # an answer to a target that was replaced or dropped
        self._acks[rank] = ack
        self.on_step(rank, ack.step)
        self._settle()

    def on_request(self, rank: int, reason: str) -> None:
        """A rank wants a pause (a break condition, a first NaN): pause them all."""
        if self.target is None and not self.paused:
            self.pause(f"rank {rank}: {reason}")

    def on_debugger_opened(self, rank: int) -> None:
        self.debugging = rank

    def debugger_gone(self, rank: int) -> None:
        """Rank ``rank``'s debugger closed (however: the server calls this for every close)."""
        if self.debugging == rank:
            self.debugging = None

    def on_debugger_closed(self, rank: int, continued: bool) -> None:
        """The debugged rank went on by itself ("c" in ipdb): the others go on with it."""
        self.debugger_gone(rank)
        if continued:
            self.resume()

    def on_error(self, message: ScriptError) -> bool:
        """A rank raised. True for the first; False for a rank that raised after another
        failed (gloo's "connection closed by peer" when its peer went away): its fate is the
        job's end, not an error of its own."""
        self._errors.add(message.rank)
        if self.failed is None or self.failed == message.rank:
            self.failed = message.rank
            return True
        return False

    def on_saved(self, rank: int, ok: bool, path: str) -> None:
        """Rank 0's checkpoint of a collective save is written (or failed)."""
        if not self._saving or rank != 0:
            return
        self._saving = False
        if ok and path:
            self._send(-1, Command(name=RNG_SAVE, rank=-1, args={"path": path}))
        self._go_on()

    def on_restored(self, rank: int, ok: bool, step: int) -> None:
        """A rank went back (or on) to ``step``: its step is that one now, not the highest."""
        if ok:
            self.steps[rank] = step
            if rank in self.paused:
                self.paused[rank] = step

    def on_exit(self, message: RankEnded) -> None:
        self._exits[message.rank] = message

    def on_gone(self, rank: int, stop_requested: bool) -> RankEnded:
        """The rank's probe hung up: how it ended, for the record."""
        self.connected.discard(rank)
        self.debugger_gone(rank)
        self.paused.pop(rank, None)
        self._acks.pop(rank, None)
        reported = self._exits.pop(rank, None)
        step = self.steps.get(rank, 0)
        code = reported.exit_code if reported is not None else None
        if reported is not None and code == 0 and rank not in self._errors:
            how, text = "finished", f"rank {rank} finished at step {step}"
        elif self.failed is not None and rank != self.failed:
            how, text = "torn-down", f"stopped by torchrun after rank {self.failed} failed"
        elif stop_requested:
            how, text = "stopped", f"rank {rank} stopped at step {step}"
        elif reported is not None:
            how, text = "crashed", f"rank {rank} exited with code {code} at step {step}"
        else:
            how, text = "died", f"rank {rank} ended without an exit status (a signal?)"
        if self.target is not None:
            self._settle()
        return RankEnded(rank=rank, step=step, exit_code=code, how=how, text=text)

    # --- from the consoles --------------------------------------------------------------------

    def on_console(self, command: Command) -> bool:
        """Handle a console's command for the job; False: send it to the ranks as it is."""
        name = command.name
        if self.debugging is not None and name in WAIT_FOR_DEBUGGER:
            # Released, the other ranks would run into their next collective and wait there
            # for the debugged one (a step or run-to would never complete; a sharded save would
            # start its collectives without it). The console says so instead.
            self._say(
                "warning",
                f"rank {self.debugging} is in the debugger: go on there first (d shows it; "
                "c in ipdb resumes every rank)",
            )
            return True
        if name == "pause":
            # Idempotent, as for one process (probe/gate.py): the console sends "resume".
            if not self.all_paused():
                self.pause("paused from the console")
        elif name == "resume":
            self.resume()
        elif name == "step":
            common = set(self.paused.values())
            if self.all_paused() and len(common) == 1:
                step = common.pop() + 1
                self._aim(step, f"one step: paused at step {step}")
            else:
                self.pause("paused from the console")
        elif name == "run-to":
            return self._run_to(command)
        elif name in (SAVE, RESTORE):
            self._collective(command)
        elif name == "debug":
            rank = command.rank if command.rank >= 0 else 0
            if rank not in self.connected:
                self._say("warning", f"no rank {rank} in this job")
            else:
                self._send(rank, Command(name="debug", rank=rank, args=command.args))
        else:
            return False
        return True

    # --- the protocol -------------------------------------------------------------------------

    def all_paused(self) -> bool:
        return bool(self.connected) and self.connected <= set(self.paused)

    def pause(self, reason: str) -> None:
        """Pause every rank at one step ahead of the fastest."""
        self._aim(max(self.steps.values(), default=0) + MARGIN, reason)

    def resume(self) -> None:
        self.target = None
        self.seq += 1  # answers still in flight are for a target that is gone
        self._acks.clear()
        self._send(-1, Command(name="resume", rank=-1))

    def _collective(self, command: Command) -> None:
        """A save or restore at one step on every rank: now if they are all paused at one step,
        else once a pause has brought them there (and they go on after)."""
        common = set(self.paused.values())
        if self.all_paused() and len(common) == 1:
            self._resume_after = False
            self._act(command)
        else:
            self._resume_after = True
            self._action = command
            self.pause(f"{'saving' if command.name == SAVE else 'restoring'} on every rank")

    def _act(self, command: Command) -> None:
        self._send(-1, Command(name=command.name, rank=-1, args=command.args))
        if command.name == SAVE:
            self._saving = True  # the RNG states follow rank 0's answer (on_saved)
            return
        path = command.args.get("path", "")
        self._send(-1, Command(name=RNG_RESTORE, rank=-1, args={"path": path}))
        self._go_on()

    def _go_on(self) -> None:
        if self._resume_after:
            self._resume_after = False
            self.resume()

    def _run_to(self, command: Command) -> bool:
        try:
            step = int(str(command.args.get("step")))
        except ValueError:
            step = 0
        ahead = max(self.steps.values(), default=0)
        if step <= ahead:
            self._say("warning", f"run to step {command.args.get('step')!r}: not a later step")
        else:
            self._say("info", f"running to step {step}")
            self._aim(step, f"reached step {step}")
        return True

    def _aim(self, step: int, reason: str) -> None:
        self.seq += 1
        self.target = step
        self.reason = reason
        self._acks.clear()
        self._send(-1, self._pause_at_command())

    def _pause_at_command(self) -> Command:
        assert self.target is not None
        args = {"step": str(self.target), "seq": str(self.seq), "reason": self.reason}
        return Command(name=PAUSE_AT, rank=-1, args=args)

    def _settle(self) -> None:
        """Every rank has answered: done, or aim past the furthest one that was too late."""
        if not self.connected <= set(self._acks):
            return
        late = [ack for ack in self._acks.values() if not ack.accepted]
        if late:
            furthest = max(ack.step for ack in self._acks.values())
            self._aim(furthest + MARGIN, self.reason)


class RankOutput:
    """Writes each rank's output into the run's log, whole lines at a time, marked by rank."""

    def __init__(self, log: BinaryIO) -> None:
        self._log = log
        self._partial: dict[int, bytearray] = {}

    def write(self, rank: int, data: bytes) -> None:
        pending = self._partial.setdefault(rank, bytearray())
        pending += data
        cut = pending.rfind(b"\n") + 1
        if not cut and len(pending) < PARTIAL_LINE_LIMIT:
            return  # a line still being written (a prompt, a progress bar): wait for its end
        complete = bytes(pending[:cut] if cut else pending)
        del pending[: len(complete)]
        self._write_lines(rank, complete)

    def flush(self) -> None:
        """Write the unfinished lines too (at the end of the run)."""
        for rank, pending in self._partial.items():
            if pending:
                self._write_lines(rank, bytes(pending) + b"\n")
                pending.clear()
        self._log.flush()

    def _write_lines(self, rank: int, data: bytes) -> None:
        mark = label(rank)
        lines = data.splitlines(keepends=True)
        self._log.write(b"".join(mark + line for line in lines))
        self._log.flush()


def label(rank: int) -> bytes:
    return b"[torchrun] " if rank == LAUNCHER_RANK else b"[rank %d] " % rank


_MARK = re.compile(rb"^\[(?:rank (\d+)|torchrun)\] ")


def marked_output(tail: bytes) -> list[Output]:
    """A tail of a job's log as ``Output`` messages, one per run of lines of one rank; the
    first line is dropped when the tail starts inside it."""
    lines = tail.splitlines(keepends=True)
    if lines and not tail.startswith(b"["):
        lines = lines[1:]
    messages: list[Output] = []
    for line in lines:
        found = _MARK.match(line)
        if found is None:  # a line the ranks wrote to the log themselves (the supervisor died)
            rank, body = LAUNCHER_RANK, line
        else:
            rank = int(found.group(1)) if found.group(1) else LAUNCHER_RANK
            body = line[found.end() :]
        if messages and messages[-1].rank == rank:
            messages[-1].data += body
        else:
            messages.append(Output(rank=rank, data=body))
    return messages


def notice(level: str, text: str) -> Notice:
    """A notice of the job (not of one rank)."""
    return Notice(rank=LAUNCHER_RANK, level=level, text=text)
