"""A console's connection to a run's supervisor (asyncio).

Used by the Textual console and by headless tools alike; knows nothing of Textual.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from tuidebug.paths import RunPaths
from tuidebug.wire import auth, codec
from tuidebug.wire.messages import Hello, Message, Reject, Welcome

CONNECT_TIMEOUT = 5.0


class ConnectError(Exception):
    """The run's supervisor cannot be reached (the run ended, or it is not ours)."""


class RunConnection:
    """An authenticated connection to one run's supervisor, in the console role."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = codec.FrameDecoder()

    @classmethod
    async def open(cls, paths: RunPaths, history: bool = True) -> RunConnection:
        """Connect and authenticate, or raise ``ConnectError`` with a one-line reason
        (``history=False``: the run's info and the live stream only, no history first)."""
        try:
            token = auth.read_token(paths.token)
        except OSError as error:
            raise ConnectError(f"cannot read the run's token: {error.strerror}") from None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(paths.socket), limit=2**24), CONNECT_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError) as error:
            raise ConnectError(f"the run's supervisor is not reachable ({error})") from None
        connection = cls(reader, writer)
        connection.send(Hello(role="console", token=token, pid=os.getpid(), history=history))
        try:
            first = await asyncio.wait_for(connection._next_batch(), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, codec.ProtocolError) as error:
            connection.close()
            raise ConnectError(f"no answer from the run's supervisor ({error})") from None
        if not first or isinstance(first[0], Reject) or not isinstance(first[0], Welcome):
            connection.close()
            reason = first[0].reason if first and isinstance(first[0], Reject) else "no welcome"
            raise ConnectError(f"the run's supervisor refused the console: {reason}")
        connection._early = first[1:]
        return connection

    _early: list[Message]

    async def _next_batch(self) -> list[Message]:
        while True:
            data = await self._reader.read(1 << 20)
            if not data:
                raise ConnectionError("the supervisor closed the connection")
            messages = self._decoder.feed(data)
            if messages:
                return messages

    async def batches(self) -> AsyncIterator[list[Message]]:
        """Messages as they arrive, a read's worth at a time, until the connection closes."""
        if self._early:
            yield self._early
            self._early = []
        while True:
            try:
                batch = await self._next_batch()
            except ConnectionError:
                return
            yield batch

    def send(self, message: Message) -> None:
        """Queue a message to the supervisor (the transport writes it without blocking)."""
        if not self._writer.is_closing():
            self._writer.write(codec.encode(message))

    def close(self) -> None:
        """Close the connection (the run goes on)."""
        self._writer.close()
