"""The probe's connection to its supervisor, run by one background thread.

The training thread never touches the socket: it appends messages to a bounded queue and
reads a few flags. The I/O thread wakes every ``FLUSH_INTERVAL`` seconds while a console is
attached, every ``UNWATCHED_FLUSH_INTERVAL`` while none is (the supervisor says which, with a
``LINK_PACE`` command), or at once when a command arrives or a message that cannot wait is
queued; it sends what is queued as frames and hands commands to a callback. When the socket
dies, the link goes quiet for good: the queue stops filling and training carries on.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from tuidebug.probe import stacks
from tuidebug.wire import codec
from tuidebug.wire.messages import (
    LINK_PACE,
    Command,
    Hello,
    Message,
    Reject,
    StepPoint,
    Steps,
    Welcome,
)
from tuidebug.wire.stack_messages import STACKS

log = logging.getLogger("tuidebug.probe")

FLUSH_INTERVAL = 0.05  # seconds: 20 batches a second is smooth for a person, cheap for the run
# Nobody watching: each batch still wakes this thread and the supervisor (~1% of a core at 20 Hz,
# taken from the training threads on a small machine). A crash of the process loses at most
# this much of the step history (a clean exit or an error sends everything).
UNWATCHED_FLUSH_INTERVAL = 0.25
QUEUE_LIMIT = 200_000  # points kept while the supervisor is slow; the oldest go first
CONNECT_TIMEOUT = 5.0


class LinkError(Exception):
    """The supervisor could not be reached or refused the probe."""


class Link:
    """A connected, authenticated socket to the supervisor plus the thread that serves it."""

    def __init__(
        self,
        sock: socket.socket,
        run_id: str,
        rank: int,
        on_command: Callable[[Command], None],
        early: list[Message] | None = None,
        decoder: codec.FrameDecoder | None = None,
    ) -> None:
        self.run_id = run_id
        self.rank = rank
        self.alive = True
        self._sock = sock
        self._on_command = on_command
        self._points: collections.deque[StepPoint] = collections.deque(maxlen=QUEUE_LIMIT)
        self._messages: collections.deque[Message] = collections.deque(maxlen=10_000)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        # The handshake's decoder, with any partial frame read behind the welcome.
        self._decoder = decoder if decoder is not None else codec.FrameDecoder()
        self._flushing = False
        self._sent_step = 0  # the last step sent, for a stacks answer (it says where it was)
        self.interval = FLUSH_INTERVAL
        """Seconds between batches (the supervisor sets it, see ``LINK_PACE``)."""
        for message in early or ():
            self._receive(message)
        self._thread = threading.Thread(target=self._serve, name="tuidebug-probe-io", daemon=True)
        self._thread.start()

    @classmethod
    def connect(
        cls,
        socket_path: str | Path,
        token: str,
        rank: int,
        world_size: int,
        on_command: Callable[[Command], None],
    ) -> Link:
        """Connect and authenticate, or raise ``LinkError`` saying why."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(socket_path))
            hello = Hello(
                role="probe", token=token, pid=os.getpid(), rank=rank, world_size=world_size
            )
            sock.sendall(codec.encode(hello))
            reply, early, decoder = _read_first(sock)
        except OSError as error:
            sock.close()
            raise LinkError(f"cannot reach the supervisor at {socket_path}: {error}") from None
        if isinstance(reply, Reject):
            sock.close()
            raise LinkError(f"the supervisor refused the probe: {reply.reason}")
        if not isinstance(reply, Welcome):
            sock.close()
            raise LinkError(f"unexpected first reply from the supervisor: {type(reply).__name__}")
        return cls(sock, reply.run_id, rank, on_command, early, decoder)

    # --- called from the training thread: cheap, never blocking, never raising -------------

    def push_point(self, point: StepPoint) -> None:
        """Queue one step boundary for the next batch."""
        if self.alive:
            self._points.append(point)

    def send(self, message: Message) -> None:
        """Queue any other message, sent in order after the points queued before it (at once,
        or with the next batch for a ``bulk`` kind)."""
        if self.alive:
            self._messages.append(message)
            if not message.bulk:
                self._wake()

    def idle(self) -> bool:
        """Nothing queued and no batch being sent (for a caller that waits for the link to
        settle, like the overhead benchmark between its rounds)."""
        return not self._points and not self._messages and not self._flushing

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (waiting up to ``timeout``), then close the socket."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout)
        try:
            self._sock.close()
        finally:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # --- the I/O thread -----------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _serve(self) -> None:
        try:
            self._sock.settimeout(CONNECT_TIMEOUT)  # a stalled supervisor must not block forever
            while True:
                stopping = self._stop.is_set()
                watched: list[socket.socket | int] = [self._sock, self._wake_r]
                readable, _, _ = select.select(watched, [], [], 0 if stopping else self.interval)
                if self._wake_r in readable:
                    os.read(self._wake_r, 4096)
                if self._sock in readable:
                    data = self._sock.recv(65536)
                    if not data:
                        raise ConnectionError("the supervisor closed the connection")
                    for message in self._decoder.feed(data):
                        self._receive(message)
                self._flush()
                if stopping:
                    return
        except (OSError, ValueError, codec.ProtocolError) as error:
            if not self._stop.is_set():
                log.warning("tuidebug: lost the supervisor (%s); training continues", error)
        finally:
            self.alive = False

    def _receive(self, message: Message) -> None:
        if not isinstance(message, Command):
            return
        if message.name == LINK_PACE:
            watched = message.args.get("watched") != "0"
            self.interval = FLUSH_INTERVAL if watched else UNWATCHED_FLUSH_INTERVAL
        elif message.name == STACKS:
            # Answered here, on the I/O thread: the training thread may be stuck (in a
            # collective, in C code) and must not be asked. Sent with this loop's flush.
            step = self._points[-1].step if self._points else self._sent_step
            self._messages.append(stacks.answer(self.rank, message.args.get("id", ""), step))
        else:
            self._on_command(message)

    def _flush(self) -> None:
        self._flushing = True
        try:
            self._send_queued()
        finally:
            self._flushing = False

    def _send_queued(self) -> None:
        chunks: list[bytes] = []
        # Points first: a message queued after a point (an error, a pause) must not overtake it.
        if self._points:
            points = [self._points.popleft() for _ in range(len(self._points))]
            for start in range(0, len(points), 5000):
                batch = points[start : start + 5000]
                self._sent_step = batch[-1].step
                chunks.append(
                    codec.encode(Steps(rank=self.rank, step=batch[-1].step, points=batch))
                )
        while self._messages:
            chunks.append(codec.encode(self._messages.popleft()))
        if chunks:
            self._sock.sendall(b"".join(chunks))


def _read_first(
    sock: socket.socket,
) -> tuple[Message, list[Message], codec.FrameDecoder]:
    """Read the handshake's reply from a blocking socket, what came with it (the supervisor
    may send commands right behind its welcome: they must not be lost) and the decoder, which
    holds any partial frame that followed."""
    decoder = codec.FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed during the handshake")
        messages = decoder.feed(data)
        if messages:
            return messages[0], messages[1:], decoder
