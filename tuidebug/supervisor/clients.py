"""A connection the supervisor serves: a probe (a rank), a console or a debugger bridge.

Its own module so that ``nodes.py`` can stand a rank of another node in for a local probe
(``nodes.RemoteRank``) without importing the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

log = logging.getLogger("tuidebug.supervisor")

CONSOLE_BACKLOG_LIMIT = 8 * 1024 * 1024  # a console this far behind is dropped; it can re-attach


@dataclass(eq=False)
class Client:
    """One connected probe or console."""

    role: str
    rank: int
    writer: asyncio.StreamWriter
    pid: int = 0
    closed: bool = field(default=False)

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            return
        if transport.get_write_buffer_size() > CONSOLE_BACKLOG_LIMIT:
            log.warning("dropping a %s that fell too far behind", self.role)
            self.close()
            return
        self.writer.write(frame)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()
