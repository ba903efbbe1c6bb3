"""Where a console's messages come from: a live run's supervisor, or a finished run's files.

Both give the same messages in the same order (run info, events, steps, output, HistoryDone),
so the console has one code path for a live run and for a run opened after it ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tuidebug.paths import RunPaths
from tuidebug.supervisor.ranks import marked_output
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire import codec
from tuidebug.wire.client import ConnectError, RunConnection
from tuidebug.wire.messages import HistoryDone, Message, Output, RunInfo

STORED_OUTPUT_BYTES = 1024 * 1024


class Source(Protocol):
    """A stream of message batches, and a way to send commands (when the run is live)."""

    live: bool

    def batches(self) -> AsyncIterator[list[Message]]: ...

    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


class LiveSource:
    """A connection to the run's supervisor."""

    live = True

    def __init__(self, connection: RunConnection) -> None:
        self._connection = connection

    def batches(self) -> AsyncIterator[list[Message]]:
        return self._connection.batches()

    def send(self, message: Message) -> None:
        self._connection.send(message)

    def close(self) -> None:
        self._connection.close()


class StoredSource:
    """A run's recorded history: metadata, SQLite history and output log."""

    live = False

    def __init__(self, paths: RunPaths) -> None:
        self._paths = paths

    async def batches(self) -> AsyncIterator[list[Message]]:
        meta = self._paths.read_meta()
        state = meta.get("state", "starting")
        world_size = int(meta.get("world_size") or 1)
        if state not in ("finished", "crashed", "stopped"):
            state = "crashed"  # recorded as live, yet nobody serves it: the supervisor died
        yield [
            RunInfo(
                run_id=self._paths.run_id,
                script=str(meta.get("script", "?")),
                args=[str(a) for a in meta.get("args", [])],
                cwd=str(meta.get("cwd", "")),
                started=float(meta.get("started") or meta.get("created") or 0.0),
                state=state,
                pid=int(meta.get("pid") or 0),
                exit_code=meta.get("exit_code"),
                ended=meta.get("ended") or meta.get("started") or meta.get("created"),
                world_size=world_size,
            )
        ]
        steps = 0
        if self._paths.history.exists():
            store = HistoryStore(self._paths.history, readonly=True)
            try:
                events: list[Message] = []
                for body in store.iter_event_bodies():
                    try:
                        event = codec.decode_body(body)
                    except codec.ProtocolError:
                        continue  # damaged: skip it
                    if event is not None:  # None: a kind from a newer version
                        events.append(event)
                yield events
                for message in store.iter_steps():
                    steps += len(message.points)
                    yield [message]
            finally:
                store.close()
        tail = _read_tail(self._paths, STORED_OUTPUT_BYTES)
        # A job's log marks each line with its rank: each rank's lines as its own output, as
        # the supervisor replays them to a console that attaches to a live job.
        outputs = marked_output(tail) if world_size > 1 else [Output(data=tail)]
        yield [*outputs, HistoryDone(steps=steps)]

    def send(self, message: Message) -> None:
        """A finished run takes no commands."""

    def close(self) -> None:
        """Nothing to close."""


def _read_tail(paths: RunPaths, size: int) -> bytes:
    try:
        with open(paths.pty_log, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return handle.read()
    except OSError:
        return b""


async def open_source(paths: RunPaths) -> Source:
    """The live run if its supervisor answers, else its recorded history."""
    if paths.socket.exists():
        try:
            return LiveSource(await RunConnection.open(paths))
        except ConnectError:
            if not paths.history.exists():
                raise
    return StoredSource(paths)
