"""Helpers for the framework tests: real ``tuidebug run --detach`` runs, read back or driven.

A run's stored history (steps and events) is read from its SQLite file once the run ended;
a live run is driven like a console drives it, over its real socket (:class:`Console`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import ROOT, TUIDEBUG, wait_for

from tuidebug.paths import find_run
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire.client import RunConnection
from tuidebug.wire.codec import decode_body
from tuidebug.wire.messages import Command, Message, StepPoint, Steps

DEMOS = ROOT / "demos"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def start(*args: str | Path) -> str:
    """``tuidebug run --detach [options] script args`` (offline, no colour); the run id."""
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **OFFLINE, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[0].split()[2]


def plain(script: Path, *args: str) -> subprocess.Popen[str]:
    """``python script args`` started (not waited for), offline."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, **OFFLINE, "NO_COLOR": "1"},
    )


def finished(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for a :func:`plain` script; its output (it must have exited 0)."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def history(run_id: str, timeout: float = 120) -> tuple[dict[int, StepPoint], list[Any]]:
    """The ended run's points by step, and its stored events (it must have exited 0)."""
    paths = find_run(run_id)
    assert paths is not None
    meta = wait_for(lambda: (m := paths.read_meta()).get("ended") and m, timeout, what="run end")
    assert meta["exit_code"] == 0, paths.pty_log.read_text(errors="replace")[-3000:]
    store = HistoryStore(paths.history, readonly=True)
    try:
        points = {p.step: p for batch in store.iter_steps() for p in batch.points}
        events = [decode_body(body) for body in store.iter_event_bodies()]
    finally:
        store.close()
    return points, events


class Console:
    """A console's connection to a live run: send commands, wait for what comes back."""

    def __init__(self, connection: RunConnection) -> None:
        self._connection = connection
        self._batches = connection.batches()
        self.seen: list[Message] = []
        self.step = 0  # the newest step point received
        self.points: list[StepPoint] = []  # every step point received, in order (branches too)

    @classmethod
    async def open(cls, run_id: str) -> Console:
        paths = find_run(run_id)
        assert paths is not None
        await asyncio.to_thread(wait_for, paths.socket.exists, 60, 0.05, "the run's socket")
        return cls(await RunConnection.open(paths))

    def send(self, name: str, **args: str) -> None:
        self._connection.send(Command(name=name, args=args, rank=-1))

    async def wait(self, predicate: Callable[[Message], bool], timeout: float = 60) -> Message:
        """The first message from now on (or already seen and not yet taken) that matches."""
        async with asyncio.timeout(timeout):
            while True:
                for i, message in enumerate(self.seen):
                    if predicate(message):
                        del self.seen[: i + 1]
                        return message
                self.seen.clear()
                batch = await anext(self._batches)
                for message in batch:
                    if isinstance(message, Steps) and message.points:
                        self.step = max(self.step, message.points[-1].step)
                        self.points += message.points
                self.seen += batch

    async def wait_step(self, step: int, timeout: float = 60) -> None:
        """Until a point of ``step`` or later has arrived."""
        async with asyncio.timeout(timeout):
            while self.step < step:
                await self.wait(lambda m: isinstance(m, Steps), timeout)

    def close(self) -> None:
        self._connection.close()
