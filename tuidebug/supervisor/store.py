"""The run's history on disk: every step point and every event, in SQLite (WAL mode).

The supervisor is the only writer. Rows are buffered and written in one transaction every
``flush()`` (the supervisor flushes twice a second and before it replays history to a console),
so a script doing 10,000 steps a second costs a handful of transactions, not 10,000.

A console that attaches late, or a run opened after it ended, is fed from here.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec

from tuidebug.wire.messages import Message, StepPoint, Steps

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    rank INTEGER NOT NULL,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    loss REAL,
    scalars BLOB
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
"""

TAIL_ROWS = 1000  # how far back ``tail`` looks for the last loss
# SQLite stores a float NaN as NULL, which reads back as "no loss": a diverged run would look
# like one that reported nothing (invisible to the ratchet, --expect, ls and --compare). So a
# NaN loss is stored as this text (a REAL column keeps text that is no number as text) and
# read back as NaN; infinities are REAL values SQLite keeps. Histories written before this
# hold NULL there, read as no loss, as they always were.
NAN_TEXT = "nan"


def _stored_loss(loss: float | None) -> float | str | None:
    return NAN_TEXT if loss is not None and math.isnan(loss) else loss


def _read_loss(value: float | str | None) -> float | None:
    return math.nan if isinstance(value, str) else value


_encode = msgspec.msgpack.Encoder().encode
_decode_scalars = msgspec.msgpack.Decoder(dict[str, float]).decode


class HistoryStore:
    """Append-only history of one run."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._rows: list[tuple[int, int, float, float | str | None, bytes | None]] = []
        self._events: list[bytes] = []
        self.steps_written = 0

    def add_points(self, rank: int, points: list[StepPoint]) -> None:
        """Buffer step points of ``rank`` for the next flush."""
        self._rows.extend(
            (rank, p.step, p.time, _stored_loss(p.loss), _encode(p.scalars) if p.scalars else None)
            for p in points
        )

    def add_event(self, frame_body: bytes) -> None:
        """Buffer an event message (already msgpack-encoded) for the next flush."""
        self._events.append(frame_body)

    def flush(self) -> None:
        """Write everything buffered in one transaction."""
        if not self._rows and not self._events:
            return
        with self._db:
            if self._rows:
                self._db.executemany("INSERT INTO steps VALUES (?, ?, ?, ?, ?)", self._rows)
            if self._events:
                self._db.executemany(
                    "INSERT INTO events (body) VALUES (?)", [(b,) for b in self._events]
                )
        self.steps_written += len(self._rows)
        self._rows.clear()
        self._events.clear()

    def count_steps(self) -> int:
        """Step points stored so far (buffered ones not counted)."""
        return int(self._db.execute("SELECT COUNT(*) FROM steps").fetchone()[0])

    def iter_steps(self, chunk: int = 5000) -> Iterator[Steps]:
        """The stored step points, oldest first, as ``Steps`` messages of at most ``chunk``."""
        cursor = self._db.execute(
            "SELECT rank, step, time, loss, scalars FROM steps ORDER BY rowid"
        )
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            by_rank: dict[int, list[StepPoint]] = {}
            for rank, step, time, loss, scalars in rows:
                point = StepPoint(
                    step, time, _read_loss(loss), _decode_scalars(scalars) if scalars else {}
                )
                by_rank.setdefault(rank, []).append(point)
            for rank, points in by_rank.items():
                yield Steps(rank=rank, step=points[-1].step, points=points)

    def tail(self, rank: int = 0) -> tuple[int | None, float | None]:
        """(last step, last loss) of ``rank``, read from the end of the table: at most
        ``TAIL_ROWS`` rows, never the whole history (``tuidebug ls`` reads this for every run).
        The loss is the last one reported (NaN included: a run that diverged shows nan)."""
        last = self._db.execute(
            "SELECT step FROM steps WHERE rank = ? ORDER BY rowid DESC LIMIT 1", (rank,)
        ).fetchone()
        loss = self._db.execute(
            "SELECT loss FROM (SELECT loss FROM steps WHERE rank = ? ORDER BY rowid DESC LIMIT ?)"
            " WHERE loss IS NOT NULL LIMIT 1",
            (rank, TAIL_ROWS),
        ).fetchone()
        return (None if last is None else int(last[0])), (
            None if loss is None else _read_loss(loss[0])
        )

    def iter_event_bodies(self) -> Iterator[bytes]:
        """The stored events' msgpack bodies, oldest first."""
        for (body,) in self._db.execute("SELECT body FROM events ORDER BY id"):
            yield bytes(body)

    def close(self) -> None:
        """Flush and close."""
        try:
            self.flush()
        finally:
            self._db.close()


def event_body(message: Message) -> bytes:
    """The msgpack body of an event message, as stored."""
    return _encode(message)
