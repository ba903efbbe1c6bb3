"""The typed messages that travel between probe, supervisor and console.

Every message is a tagged msgspec Struct; the tag (the class name) is the message kind. Every
message carries the rank of the training process it concerns and the step it was made at, so a
console can place anything on the timeline and tell the ranks of a job apart.

Compatibility rules, so that a newer peer can talk to an older one:
- ``PROTOCOL`` changes only when an existing message changes meaning.
- New kinds may be added freely: a receiver skips kinds it does not know (see ``codec``); a
  feature's kinds live in its own module, listed in ``registry.py``.
- New fields are added with defaults, at the end.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

PROTOCOL = 1

Role = Literal["probe", "console", "bridge"]
RunStateName = Literal["starting", "running", "finished", "crashed", "stopped"]


class Message(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Base of every message: which rank it concerns and at which step it was made.

    ``retention`` tells the supervisor what to keep of a kind a probe sends, for consoles that
    attach later: "all" (stored in the run's history), "latest" (the newest per rank, in
    memory), or "none" (passed on live only). ``bulk`` kinds (a probe may send one every step)
    do not wake the probe's I/O thread: they go with its next batch, at most 50 ms later.
    """

    retention: ClassVar[str] = "all"
    bulk: ClassVar[bool] = False

    rank: int = 0
    step: int = 0


# --- handshake --------------------------------------------------------------------------------


class Hello(Message):
    """First frame from any client: who it is and the run's secret token.

    A "bridge" is a console's second connection, used while it hands its terminal to the
    script's debugger: it gets the script's output live (no history) and sends keystrokes.
    """

    role: Role
    token: str
    protocol: int = PROTOCOL
    pid: int = 0
    world_size: int = 1
    history: bool = True
    """A console's: False for a one-shot client (``tuidebug stacks``) that wants the run's
    info and the live stream, not the history."""


class Welcome(Message):
    """The supervisor accepted the Hello."""

    run_id: str
    protocol: int = PROTOCOL


class Reject(Message):
    """The supervisor refused the Hello; the connection closes after this frame."""

    reason: str


# --- probe -> supervisor -> consoles ----------------------------------------------------------


class StepPoint(msgspec.Struct, array_like=True):
    """One step boundary: its number, wall-clock time, loss and named scalars."""

    step: int
    time: float
    loss: float | None = None
    scalars: dict[str, float] = {}


class Steps(Message):
    """A batch of step boundaries. The probe sends a batch every few tens of milliseconds."""

    points: list[StepPoint]


class Boundary(Message):
    """How the probe found the step boundary: "hook" (dbg.step), "optimizer" or "backward"."""

    source: str
    detail: str = ""


class ModelSeen(Message):
    """A model the probe found (a root module called by the script) or was given."""

    name: str
    class_name: str
    parameters: int
    trainable: int
    modules: int


class OptimizerSeen(Message):
    """An optimizer the probe found or was given."""

    class_name: str
    lr: float | None = None
    param_groups: int = 1


class ScriptError(Message):
    """The script raised: the exception and its traceback as the user would see it.

    ``held`` is true when the process waits (before exiting) for a console to open a
    post-mortem debugger or to let it go (``Command("release")``).
    """

    exc_type: str
    text: str
    traceback: str
    held: bool = False


class Paused(Message):
    """The training thread stopped at the boundary of ``step``; ``where`` is the user's line."""

    reason: str
    where: str = ""


class Resumed(Message):
    """The training thread goes on from the boundary of ``step``."""


class DebuggerOpened(Message):
    """A debugger took the script's terminal: consoles hand their terminal over to it.

    ``kind``: "at-step" (from the console), "breakpoint" (the script's own breakpoint()),
    "post-mortem", or "prompt" (a debugger prompt seen in the output).
    """

    kind: str
    where: str = ""


class DebuggerClosed(Message):
    """The debugger is done; ``continued`` says whether the run went on."""

    continued: bool = False


class Notice(Message):
    """Something a person should read: a command's effect, or why it was refused."""

    level: str  # "info", "warning" or "error"
    text: str


class PauseAck(Message):
    """A rank's answer to the supervisor's ``pause-at`` (ranks.py): at ``step`` when it took
    the target; ``accepted`` is false when it is already past ``target`` (too late to pause
    there: the supervisor picks a later step for every rank)."""

    retention: ClassVar[str] = "none"

    target: int
    seq: int
    accepted: bool


class PauseRequest(Message):
    """A rank of a job wants a pause (a break condition held, a first NaN...): in a job a rank
    never pauses alone, the supervisor pauses every rank at one step ahead of the fastest."""

    retention: ClassVar[str] = "none"

    reason: str


class RankEnded(Message):
    """One rank of a job is over. The probe sends its exit status; the supervisor completes
    ``how``: "finished", "crashed", "stopped" (by the person) or "torn-down" (torchrun ended it
    because another rank failed; ``text`` says which), "died" (no exit status: a signal)."""

    exit_code: int | None = None
    how: str = ""
    text: str = ""


# --- supervisor -> consoles -------------------------------------------------------------------


class RunInfo(Message):
    """What a console needs to know about the run when it attaches (sent first, and on change)."""

    run_id: str
    script: str
    args: list[str]
    cwd: str
    started: float
    state: RunStateName
    pid: int = 0
    exit_code: int | None = None
    ended: float | None = None
    world_size: int = 1
    """Ranks of the job (``tuidebug run --nproc-per-node``); 1 for a single process."""


class Output(Message):
    """Bytes the script wrote to its terminal (the pty), in order."""

    retention: ClassVar[str] = "none"

    data: bytes


class HistoryDone(Message):
    """Everything stored before this console attached has been sent; live data follows."""

    steps: int = 0


# --- consoles -> supervisor (-> probes) -------------------------------------------------------


class Command(Message):
    """A request from a console: "stop-run" is handled by the supervisor, others go to probes."""

    name: str
    args: dict[str, str] = {}


PAUSE_AT = "pause-at"
"""The supervisor's command to the ranks of a job (never a console's): pause at the boundary of
``args["step"]``; ``args["seq"]`` numbers the attempt, ``args["reason"]`` is shown. The probe's
I/O thread answers at once with a ``PauseAck``."""

LINK_PACE = "link-pace"
"""The supervisor's command to its probes' links (never a console's): ``args["watched"]`` is
"1" while a console is attached, "0" when none is (the link then sends its batches less often:
nobody is looking, and each batch wakes the supervisor)."""


class Input(Message):
    """Keystrokes for the script's terminal (used by the debugger bridge)."""

    data: bytes


class Resize(Message):
    """The size of the console's terminal, applied to the script's pty."""

    cols: int
    rows: int
