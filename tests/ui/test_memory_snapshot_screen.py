"""The CUDA memory snapshot on the GPU screen (key G, then S) under Pilot.

The source answers the console's ``memory-snapshot`` command as a rank's probe would: with a
``MemorySnapshotStarted`` and then a ``MemorySnapshotResult`` made by the probe's own
``summarize_snapshot`` from the fake snapshot of ``tests/cuda_snapshot.py`` (this machine has no
GPU), or with the calm no-CUDA answer the real probe gives on a CPU run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from cuda_snapshot import CWD, FORWARD_SITE, OPTIMIZER_SITE, OWN, STDLIB, TORCH, fake_snapshot
from rich.console import Console
from test_dashboard import ScriptedSource, history, run_info
from test_gpu_screen import gpu_stats

from tuidebug.console.app import TuidebugApp
from tuidebug.console.screens.gpu import GpuScreen
from tuidebug.probe.extensions.memory import NO_CUDA
from tuidebug.probe.memory_sites import NO_STACK, summarize_snapshot
from tuidebug.wire.gpu_messages import MemorySnapshotResult, MemorySnapshotStarted
from tuidebug.wire.messages import Command, HistoryDone, Message


def _text(widget: Any) -> str:
    console = Console(width=160, record=True)  # wide enough for a site's name on its line
    console.print(widget.content)
    return console.export_text()


class AnsweringSource(ScriptedSource):
    """A scripted run whose probe answers ``memory-snapshot`` with ``answers`` (one batch per
    call of :meth:`release`, so a test sees each state)."""

    def __init__(self, batches: list[list[Message]], answers: list[list[Message]]) -> None:
        super().__init__(batches)
        self.answers = answers
        self.pending: list[list[Message]] = []

    def send(self, message: Message) -> None:
        super().send(message)
        if isinstance(message, Command) and message.name == "memory-snapshot":
            self.release()

    def release(self) -> None:
        if self.answers:
            self.pending.append(self.answers.pop(0))

    async def batches(self) -> AsyncIterator[list[Message]]:
        for batch in self.batches_:
            yield batch
        while not self.closed:
            while self.pending:
                yield self.pending.pop(0)
            await asyncio.sleep(0.05)


def _start() -> list[list[Message]]:
    return [[run_info(), *history(500), HistoryDone(steps=500), gpu_stats(0)]]


def _result() -> MemorySnapshotResult:
    summary = summarize_snapshot(fake_snapshot(), internal=[TORCH, STDLIB], own=[OWN], cwd=CWD)
    return MemorySnapshotResult(
        step=503,
        first=501,
        path="/runs/r/memory/snapshot-501-503-rank0.pickle",
        file_bytes=2_400_000,
        wall=0.5,
        overhead=0.2,
        **summary.fields(),
    )


def test_s_records_three_steps_and_shows_the_top_sites() -> None:
    async def scenario() -> None:
        answers: list[list[Message]] = [
            [MemorySnapshotStarted(step=500, steps=3)],
            [_result()],
        ]
        source = AnsweringSource(_start(), answers)
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 50)) as pilot:
            await pilot.pause(0.4)
            await pilot.press("G")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, GpuScreen)
            assert "S: record the next 3 steps" in _text(screen.query_one("#gpu-snapshot"))
            await pilot.press("S")
            await pilot.pause(0.3)
            (command,) = [m for m in source.sent if isinstance(m, Command)]
            assert (command.name, command.args) == ("memory-snapshot", {"steps": "3"})
            section = _text(screen.query_one("#gpu-snapshot"))
            assert "recording the allocations of steps 501-503 (rank 0)" in section
            source.release()  # the probe's answer after its 3 steps
            await pilot.pause(0.3)
            section = _text(screen.query_one("#gpu-snapshot"))
            assert "snapshot-501-503-rank0.pickle" in section and "memory_viz" in section
            assert "peak 64.0 MiB during the steps" in section
            lines = section.splitlines()
            head = next(i for i, line in enumerate(lines) if "allocated  site" in line)
            sites = [line.split("  ")[-1].strip() for line in lines[head + 1 : head + 4]]
            assert sites == [FORWARD_SITE, NO_STACK, OPTIMIZER_SITE]
            forward = lines[head + 1].split()
            assert forward[:7] == ["32.0", "MiB", "0", "B", "2", "64.0", "MiB"]

    asyncio.run(scenario())


def test_on_a_cpu_run_s_gives_the_calm_answer() -> None:
    async def scenario() -> None:
        calm = MemorySnapshotResult(step=500, first=500, unavailable=NO_CUDA)
        source = AnsweringSource(_start(), [[calm]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 40)) as pilot:
            await pilot.pause(0.4)
            await pilot.press("G")
            await pilot.pause(0.2)
            await pilot.press("S")
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, GpuScreen)  # still there: nothing broke
            section = _text(screen.query_one("#gpu-snapshot"))
            assert "CUDA is not initialised in this process" in section
            assert "error" not in section.lower() and "failed" not in section

    asyncio.run(scenario())
