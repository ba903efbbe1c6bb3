"""Messages of "where is each rank now": every thread's Python stack, per rank.

A console (or ``tuidebug stacks``) sends ``Command(STACKS, args={"id": ...}, rank=-1)``. The
supervisor relays it to every probe; each probe's I/O thread answers at once with a
:class:`Stacks` (``source="python"``), never waiting for the training thread, which may be stuck
in a collective or in C code. For a rank that did not answer within ``PYTHON_ANSWER_TIMEOUT``
(its GIL held by C code), the supervisor makes the process dump its stacks with
``faulthandler`` (a signal, see :func:`dump_signal`) and sends that as a :class:`Stacks` with
``source="faulthandler"``. :class:`StacksDone` ends the answer to one request.

Also the text form of a stack (:func:`stacks_text`), the same for the CLI, the console and the
hang alert.
"""

from __future__ import annotations

import signal
from typing import ClassVar

import msgspec

from tuidebug.wire.messages import Message

STACKS = "stacks"
"""The command: ``args["id"]`` names the request (replies carry it as ``request``)."""

PYTHON_ANSWER_TIMEOUT = 2.0
"""Seconds the supervisor waits for the probes' own answers before the faulthandler dump."""

DUMP_FOLDER = "stacks"
"""In the run's folder: ``<pid>.txt``, the file each rank's faulthandler writes to."""

MAX_THREADS = 64
MAX_FRAMES = 64  # per thread, the innermost ones (a traceback's useful end)
MAX_CODE = 160  # characters of a source line
MAX_PATH = 300  # characters of a file name


def dump_signal() -> int:
    """The signal that makes a probe's process dump its threads' stacks (faulthandler).

    Not SIGUSR1/SIGUSR2: torchrun forwards those to the ranks when asked to
    (``--signals-to-handle``, "used in SLURM environments") and SLURM's ``--signal`` sends them
    before a job's time limit; a dump handler there would swallow the user's own signal. torch
    elastic handles SIGTERM, SIGINT, SIGHUP and SIGQUIT. A real-time signal is used by neither;
    +6 keeps clear of the lowest ones, which some runtimes take.
    """
    return signal.SIGRTMIN + 6


class Frame(msgspec.Struct, array_like=True):
    """One frame of a stack: where it is and its source line (never a value from it)."""

    file: str
    line: int
    function: str
    code: str = ""


class ThreadStack(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thread: ``frames`` run from the outermost to the innermost (the line it is at)."""

    name: str
    ident: int
    training: bool = False
    """The training thread (the process's main thread, which runs the script)."""
    daemon: bool = False
    frames: list[Frame] = msgspec.field(default_factory=list)
    omitted: int = 0
    """Outer frames left out (a stack deeper than ``MAX_FRAMES``)."""


class Stacks(Message):
    """The stacks of every thread of one rank's process, right now (``time``).

    ``source``: "python" (the probe's I/O thread read ``sys._current_frames``) or
    "faulthandler" (the process dumped them on a signal: its Python did not answer).
    ``note`` says what is missing, e.g. threads left out.
    """

    retention: ClassVar[str] = "latest"

    request: str = ""
    pid: int = 0
    time: float = 0.0
    source: str = "python"
    threads: list[ThreadStack] = msgspec.field(default_factory=list)
    note: str = ""


class StacksDone(Message):
    """The answer to request ``request`` is complete: ``ranks`` were asked; ``unanswered``
    gave no stack at all (``note`` says why)."""

    retention: ClassVar[str] = "none"

    request: str
    ranks: list[int] = msgspec.field(default_factory=list)
    unanswered: list[int] = msgspec.field(default_factory=list)
    note: str = ""


def sorted_threads(stacks: Stacks) -> list[ThreadStack]:
    """The training thread first, then the others by name."""
    return sorted(stacks.threads, key=lambda t: (not t.training, t.name, t.ident))


def thread_text(thread: ThreadStack, last: int | None = None) -> list[str]:
    """A thread as a traceback would show it, innermost frame last (``last``: only the
    innermost ``last`` frames)."""
    role = " (training thread)" if thread.training else ""
    lines = [f'Thread "{thread.name}"{role} 0x{thread.ident:x}:']
    frames = thread.frames
    omitted = thread.omitted
    if last is not None and len(frames) > last:
        omitted += len(frames) - last
        frames = frames[-last:]
    if omitted:
        lines.append(f"  ... {omitted} outer frame(s) not shown")
    for frame in frames:
        lines.append(f'  File "{frame.file}", line {frame.line}, in {frame.function}')
        if frame.code:
            lines.append(f"    {frame.code}")
    if not thread.frames:
        lines.append("  (no Python frame)")
    return lines


def stacks_text(stacks: Stacks, training_only: bool = False, last: int | None = None) -> str:
    """A rank's stacks as text: a header line, then each thread (the training thread first)."""
    via = "" if stacks.source == "python" else f", via {stacks.source}"
    lines = [f"rank {stacks.rank} (pid {stacks.pid}{via}):"]
    if stacks.note:
        lines.append(f"  note: {stacks.note}")
    threads = sorted_threads(stacks)
    if training_only:
        threads = [t for t in threads if t.training] or threads[:1]
    for thread in threads:
        lines.extend(thread_text(thread, last))
    return "\n".join(lines)
