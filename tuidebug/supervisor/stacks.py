"""Gathering every rank's stacks in the supervisor (the extensions ``stacks`` and ``hang``).

One request: the probes of every connected rank are asked (``Command(STACKS)``, rank -1); each
answers from its I/O thread. A rank that has not answered after ``PYTHON_ANSWER_TIMEOUT`` (its
GIL held by C code) is made to dump its stacks with faulthandler: the supervisor sends it
:func:`~tuidebug.wire.stack_messages.dump_signal` (only if the probe armed the handler, which its
dump file says: ``probe/extensions/stacks.py``) and reads what the handler appended to the file.
Those stacks are published as a ``Stacks`` with ``source="faulthandler"``; then a
``StacksDone`` ends the request, listing the ranks that gave nothing.

The waiting is asyncio (the loop serves everything else meanwhile); reading the dump file is a
few kilobytes from the page cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuidebug.probe.stacks import source_line
from tuidebug.supervisor.extensions import SupervisorApi
from tuidebug.wire.messages import Command, Message
from tuidebug.wire.stack_messages import (
    DUMP_FOLDER,
    MAX_FRAMES,
    MAX_PATH,
    PYTHON_ANSWER_TIMEOUT,
    STACKS,
    Frame,
    Stacks,
    StacksDone,
    ThreadStack,
    dump_signal,
)

DUMP_WAIT = 1.0  # seconds for a signalled process's handler to write its dump
DUMP_SETTLE = 0.1  # the dump is complete when the file has not grown for this long

# One dump at a time per process: two requests at once (a console's and the hang watch's) would
# otherwise each read both dumps from the one file.
_dumping: dict[int, asyncio.Lock] = {}

_HEADER = re.compile(r"tuidebug-stacks pid=(\d+) rank=(-?\d+) main=0x([0-9a-f]+)")
_THREAD = re.compile(r"^(Current thread|Thread) 0x([0-9a-f]+) \(most recent call first\):")
_FRAME = re.compile(r'^  File "(.*)", line (\d+) in (.*)$')


@dataclass
class _Pending:
    ranks: dict[int, int]  # rank -> pid, as connected when the request began
    replies: dict[int, Stacks] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)


class StackGatherer:
    """Requests in flight, fed by the supervisor's listener with the probes' replies."""

    def __init__(self, supervisor: SupervisorApi) -> None:
        self.supervisor = supervisor
        self._pending: dict[str, _Pending] = {}
        supervisor.listen(self._on_message)

    def _on_message(self, message: Message, from_probe: bool) -> None:
        if from_probe and isinstance(message, Stacks):
            pending = self._pending.get(message.request)
            if pending is not None and message.rank in pending.ranks:
                pending.replies[message.rank] = message
                if len(pending.replies) == len(pending.ranks):
                    pending.complete.set()

    def begin(self, request: str | None = None, send: bool = True) -> str:
        """Start a request (its id is returned): from now on the probes' answers are kept.

        ``send=False`` when the request is a console's, which the supervisor relays to the
        probes itself right after its listeners ran.
        """
        if request is None:
            request = secrets.token_hex(4)
        self._pending[request] = _Pending(dict(self.supervisor.probe_pids()))
        if send:
            self.supervisor.send_to_probes(Command(name=STACKS, rank=-1, args={"id": request}))
        return request

    async def gather(self, request: str | None = None) -> dict[int, Stacks]:
        """Every connected rank's stacks, by rank (a rank that gave nothing is missing)."""
        return await self.finish(self.begin(request))

    async def finish(
        self, request: str, timeout: float = PYTHON_ANSWER_TIMEOUT
    ) -> dict[int, Stacks]:
        """Wait for the answers to ``request``, dump the silent ranks with faulthandler (those
        dumps are published here: the probes' own answers reach the consoles as they come),
        publish the ``StacksDone``; return the stacks by rank."""
        pending = self._pending[request]
        try:
            if pending.ranks:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(pending.complete.wait(), timeout)
        finally:
            del self._pending[request]
        replies = dict(pending.replies)
        silent = [rank for rank in pending.ranks if rank not in replies]
        dumps = await asyncio.gather(
            *(self._dump(request, rank, pending.ranks[rank]) for rank in silent)
        )
        notes = []
        for rank, (stacks, why) in zip(silent, dumps, strict=True):
            if stacks is None:
                notes.append(f"rank {rank}: {why}")
                continue
            replies[rank] = stacks
            self.supervisor.publish(stacks)
        self.supervisor.publish(
            StacksDone(
                request=request,
                ranks=sorted(pending.ranks),
                unanswered=sorted(rank for rank in pending.ranks if rank not in replies),
                note="; ".join(notes),
            )
        )
        return replies

    async def _dump(self, request: str, rank: int, pid: int) -> tuple[Stacks | None, str]:
        """The faulthandler dump of ``pid``, or None and why there is none."""
        lock = _dumping.setdefault(pid, asyncio.Lock())
        async with lock:
            return await self._dump_now(request, rank, pid)

    async def _dump_now(self, request: str, rank: int, pid: int) -> tuple[Stacks | None, str]:
        path = Path(self.supervisor.paths.folder) / DUMP_FOLDER / f"{pid}.txt"
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                header = _HEADER.match(handle.readline())
                start = os.fstat(handle.fileno()).st_size
        except OSError:
            return None, f"no answer in {PYTHON_ANSWER_TIMEOUT:g} s and no faulthandler dump armed"
        if header is None or int(header.group(1)) != pid:
            return None, "no answer, and its dump file is not its own"
        try:
            os.kill(pid, dump_signal())
        except OSError as error:
            return None, f"no answer, and the dump signal failed: {error.strerror}"
        text = await _read_growth(path, start)
        if not text.strip():
            return None, f"no answer, and no faulthandler dump in {DUMP_WAIT:g} s"
        threads = parse_faulthandler(text, int(header.group(3), 16))
        return (
            Stacks(
                rank=rank,
                request=request,
                pid=pid,
                time=time.time(),
                source="faulthandler",
                threads=threads,
                note=f"its Python did not answer in {PYTHON_ANSWER_TIMEOUT:g} s "
                "(the GIL held by C code?): dumped by faulthandler, no thread names",
            ),
            "",
        )


async def _read_growth(path: Path, start: int) -> str:
    """What was appended to ``path`` after ``start``, once it stopped growing."""
    deadline = time.monotonic() + DUMP_WAIT
    size = start
    settled_since: float | None = None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        try:
            now_size = path.stat().st_size
        except OSError:
            return ""
        if now_size != size:
            size, settled_since = now_size, time.monotonic()
        elif settled_since is not None and time.monotonic() - settled_since >= DUMP_SETTLE:
            break
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(size - start).decode("utf-8", errors="replace")


def parse_faulthandler(text: str, main_ident: int) -> list[ThreadStack]:
    """faulthandler's dump (threads, frames most recent first) as ``ThreadStack``s."""
    threads: list[ThreadStack] = []
    frames: list[Frame] = []
    ident = -1

    def close() -> None:
        if ident >= 0:
            kept = frames[:MAX_FRAMES]
            threads.append(
                ThreadStack(
                    name="MainThread" if ident == main_ident else f"thread 0x{ident:x}",
                    ident=ident,
                    training=ident == main_ident,
                    frames=list(reversed(kept)),
                    omitted=len(frames) - len(kept),
                )
            )

    for line in text.splitlines():
        thread = _THREAD.match(line)
        if thread is not None:
            close()
            ident, frames = int(thread.group(2), 16), []
            continue
        frame = _FRAME.match(line)
        if frame is not None and ident >= 0:
            file, number = frame.group(1), int(frame.group(2))
            frames.append(Frame(file[:MAX_PATH], number, frame.group(3), source_line(file, number)))
    close()
    return threads
