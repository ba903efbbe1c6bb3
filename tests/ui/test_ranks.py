"""A job of four ranks under Pilot: the ranks screen, the chart's rank, output, layers, alerts.

The app is real; its messages are a scripted stream, as the supervisor of a ``torchrun`` job
sends them: each rank's Steps batches, rank 2 slower than the others (a straggler), rank 3 dead
of a ScriptError, output of every rank and of the launcher (with torch's ``[rank1]:`` prefix).
Step times are stamped just ahead of the console's clock, so no rank reads as "waiting".
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from test_dashboard import ScriptedSource, run_info
from textual.widgets import DataTable, RichLog, Static

from tuidebug.console.app import TuidebugApp
from tuidebug.console.ranks_state import BAND
from tuidebug.console.screens.alerts import AlertsScreen
from tuidebug.console.screens.layers import LayersScreen
from tuidebug.console.screens.output import OutputScreen
from tuidebug.console.screens.ranks import RanksScreen
from tuidebug.console.widgets.layer_table import LayerTable as LayerTableWidget
from tuidebug.console.widgets.loss_chart import LossChart
from tuidebug.console.widgets.run_header import RunHeader
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.gpu_messages import AllocatorStats, DeviceMemory
from tuidebug.wire.layer_messages import LayerStats, LayerTable
from tuidebug.wire.messages import (
    Command,
    DebuggerOpened,
    HistoryDone,
    Message,
    ModelSeen,
    Output,
    ScriptError,
    StepPoint,
    Steps,
)

WORLD = 4
STEPS = 100
SLOW = 2  # 1.8 times the others' step time
DEAD = 3


def step_time(rank: int) -> float:
    return 0.018 if rank == SLOW else 0.01


def job_stream(now: float | None = None) -> list[Message]:
    # The last step of every rank is a minute ahead of the clock: "running", however slow the
    # test machine is (a rank silent for 2 s would read "waiting").
    end = (time.time() if now is None else now) + 60.0
    batch: list[Message] = [
        run_info(world_size=WORLD),
        *(
            ModelSeen(
                rank=rank,
                name="model",
                class_name="MLP",
                parameters=1000,
                trainable=1000,
                modules=3,
            )
            for rank in range(WORLD)
        ),
    ]
    for rank in range(WORLD):
        dt = step_time(rank)
        points = [
            StepPoint(s, end - (STEPS - s) * dt, 2.0 / s + 0.05 * rank) for s in range(1, STEPS + 1)
        ]
        batch.append(Steps(rank=rank, step=STEPS, points=points))
        batch.append(AllocatorStats(rank=rank, devices=[DeviceMemory(device=rank, allocated=1)]))
        batch.append(Output(rank=rank, data=b"rank %d at step 100\r\n" % rank))
    batch.append(
        ScriptError(rank=DEAD, step=STEPS, exc_type="RuntimeError", text="boom", traceback="tb")
    )
    batch.append(Output(rank=-1, data=b"launcher says hi\n[rank1]: a c10d warning\n"))
    batch.append(HistoryDone(steps=STEPS * WORLD))
    return batch


def layers_and_alerts() -> list[Message]:
    out: list[Message] = []
    for rank in (0, 1):
        out.append(
            LayerTable(
                rank=rank,
                model="model",
                base=0,
                names=["", "fc"],
                types=["MLP", "Linear"],
                depths=[0, 1],
                params=[10, 10],
            )
        )
        value = 1.0 + rank
        out.append(
            LayerStats(
                rank=rank,
                step=50,
                layers=[1],
                calls=[1],
                act=[value, value, -value, value, 0.0, 0.0, -1.0],
                out_shapes=["8×4"],
                in_shapes=["8×4"],
                dtypes=["float32"],
                devices=["cpu"],
            )
        )
        for _ in range(rank + 1):
            alert = Alert(
                rank=rank,
                step=10,
                rule="lr-high",
                severity="warning",
                message="m",
                why="w",
                fix="f",
                layer="model.fc",
            )
            out.append(alert)
    return out


async def keys(pilot: Any, *names: str) -> None:
    """Press keys one at a time, letting each screen change settle (a loaded box is slow)."""
    for name in names:
        await pilot.press(name)
        await pilot.pause(0.15)


def cell_texts(table: DataTable[Any], row: int) -> list[str]:
    return [str(cell) for cell in table.get_row_at(row)]


def log_lines(log: RichLog) -> list[str]:
    return [line.text for line in log.lines]


def test_ranks_screen_marks_the_straggler_and_the_dead_rank() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource([job_stream()]))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("R")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, RanksScreen)
            table = screen.table
            assert table.row_count == WORLD
            rows = [cell_texts(table, r) for r in range(WORLD)]
            assert rows[0][:4] == ["0", "running", "100", "100.0/s"]
            assert rows[0][4:7] == ["10.0 ms", "0.02", "cuda:0"] and rows[0][7] == ""
            assert rows[SLOW][1] == "running" and rows[SLOW][7] == "slow x1.8"
            assert rows[SLOW][4] == "18.0 ms" and rows[SLOW][3] == "55.6/s"
            assert rows[DEAD][1] == "dead, exit 1" and rows[DEAD][7] == ""
            summary = str(screen.query_one("#ranks-summary").render())
            assert "4 ranks · 3 live" in summary and "straggler: rank 2" in summary
            # Updated in place: a new step of rank 0 rewrites its cells, not the table.
            before = table.row_count
            point = StepPoint(101, time.time() + 61.0, 0.5)
            app.model.fold([Steps(rank=0, step=101, points=[point])])
            await pilot.pause(0.2)
            assert table.row_count == before and cell_texts(table, 0)[2] == "101"
            assert cell_texts(table, 0)[5] == "0.5"
            # Enter shows the highlighted rank on the chart and goes back.
            await keys(pilot, "down", "enter")
            await pilot.pause(0.2)
            assert app.screen is app.dashboard and app.model.ranks.shown == 1
            assert "rank 1/4" in str(app.dashboard.query_one(RunHeader).headline())
            # Opened again (the app keeps the screen; its table is a new one): every row.
            await pilot.press("R")
            await pilot.pause(0.2)
            assert app.screen is screen and screen.table.row_count == WORLD
            assert cell_texts(screen.table, SLOW)[7] == "slow x1.8"
            # The app's frame timer can sync a pushed-again screen between its compose (a new,
            # empty table) and its on_mount: the rows come back, no cell of a row it lacks.
            await screen.recompose()
            app.model.fold([Steps(rank=0, step=102, points=[StepPoint(102, point.time, 0.4)])])
            screen.sync()
            assert screen.table.row_count == WORLD and cell_texts(screen.table, 0)[2] == "102"
            # A longer state widens its column, with no other message for the table (paused).
            app.model.fold([DebuggerOpened(rank=0, step=102, kind="at-step")])
            await pilot.pause(0.3)
            assert "in debugger" in screen.table.render_line(1).text

    asyncio.run(scenario())


def test_k_cycles_the_chart_and_header_through_the_ranks_and_the_band() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource([job_stream()]))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            ranks = app.model.ranks
            chart = app.dashboard.query_one(LossChart)
            header = app.dashboard.query_one(RunHeader)
            assert chart.history is ranks.rank(0).loss
            assert "rank 0/4" in str(header.headline())
            assert "step 100" in str(header.headline())
            await pilot.press("k")
            await pilot.pause(0.1)
            assert chart.history is ranks.rank(1).loss
            assert "rank 1/4" in str(header.headline()) and "loss 0.07" in str(header.headline())
            assert app.dashboard.query_one("#chart-box").border_title == "loss · rank 1"
            await pilot.press("k", "k", "k")
            await pilot.pause(0.1)
            assert ranks.shown is BAND and chart.history is ranks.band
            headline = str(header.headline())
            assert "ranks 0-3 band" in headline and "step 100" in headline
            # The band: the four ranks' losses at every step (rank 3 died at step 100: its
            # points up to there are in, one value per rank per step).
            last = ranks.band.buckets()[-1]
            assert last["count"] == WORLD and last["min"] == 0.02 and last["max"] == 0.17
            await pilot.press("k")
            await pilot.pause(0.1)
            assert chart.history is ranks.rank(0).loss
            assert "rank 0/4 (1 down, straggler 2: R)" in str(header.headline())
            models = str(app.dashboard.query_one("#models", Static).render())
            assert models.count("MLP") == 1  # every rank reports it; shown once
            output = str(app.dashboard.query_one("#output").render())
            assert "[rank 1] a c10d warning" in output and "[torchrun] launcher says hi" in output

    asyncio.run(scenario())


def test_one_process_has_no_rank_keys() -> None:
    async def scenario() -> None:
        rank0 = [m for m in job_stream() if isinstance(m, (ModelSeen, Steps)) and m.rank == 0]
        stream: list[Message] = [run_info(), *rank0, Output(data=b"plain\n")]
        app = TuidebugApp(source=ScriptedSource([stream]))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            assert app.model.ranks.size == 1
            await pilot.press("k", "R")
            await pilot.pause(0.1)
            assert app.screen is app.dashboard and app.model.ranks.shown == 0
            # Bound, but off (check_action): not in the footer, and pressing them did nothing.
            active = app.screen.active_bindings
            assert "k" not in active and "R" not in active and "o" in active
            assert "rank" not in str(app.dashboard.query_one(RunHeader).headline())
            assert "plain" in str(app.dashboard.query_one("#output").render())

    asyncio.run(scenario())


def test_output_screen_filters_by_rank_and_keeps_the_marks() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource([job_stream()]))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("o")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, OutputScreen)
            log = screen.query_one(RichLog)
            lines = log_lines(log)
            assert lines[:2] == ["[rank 0] rank 0 at step 100", "[rank 1] rank 1 at step 100"]
            assert "[torchrun] launcher says hi" in lines and "[rank 1] a c10d warning" in lines
            assert len(lines) == WORLD + 2
            await pilot.press("k")  # rank 0
            await pilot.pause(0.1)
            assert screen.rank == 0 and log_lines(log) == ["[rank 0] rank 0 at step 100"]
            await pilot.press("k")  # rank 1: its own line and the one torch prefixed
            await pilot.pause(0.1)
            assert log_lines(log) == ["[rank 1] rank 1 at step 100", "[rank 1] a c10d warning"]
            await pilot.press("k", "k", "k")  # ranks 2, 3, then the launcher's lines
            await pilot.pause(0.1)
            assert screen.rank == -1 and log_lines(log) == ["[torchrun] launcher says hi"]
            app.model.fold([Output(rank=-1, data=b"more from torchrun\n"), Output(data=b"r0\n")])
            await pilot.pause(0.2)
            assert log_lines(log)[-1] == "[torchrun] more from torchrun"  # rank 0's: filtered
            await pilot.press("k")  # every rank again
            await pilot.pause(0.1)
            assert screen.rank is None and len(log_lines(log)) == WORLD + 4
            assert "every rank" in str(screen.query_one("#output-filter").render())

    asyncio.run(scenario())


def test_layers_and_alerts_choose_the_rank() -> None:
    async def scenario() -> None:
        source = ScriptedSource([[*job_stream(), *layers_and_alerts()]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("L")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, LayersScreen)
            status = str(screen.query_one("#layers-status").render())
            assert status.startswith("rank 0 (2 ranks, k)")
            table = screen.query_one(LayerTableWidget)
            assert table.model.rows[1].stat("mean") == 1.0
            await pilot.press("k")
            await pilot.pause(0.2)
            assert screen.rank == 1 and table.model.rows[1].stat("mean") == 2.0
            assert str(screen.query_one("#layers-status").render()).startswith("rank 1")
            assert table.row_count == 2
            await pilot.press("enter")  # rank 1's detail: only rank 1 is asked for histograms
            await pilot.pause(0.2)
            await pilot.press("escape")
            await pilot.pause(0.1)
            focus = [m for m in source.sent if isinstance(m, Command) and m.name == "layers-focus"]
            assert [(m.rank, m.args["layer"]) for m in focus] == [(1, "0"), (1, "-1")]
            await keys(pilot, "escape", "a")
            await pilot.pause(0.2)
            alerts = app.screen
            assert isinstance(alerts, AlertsScreen)
            grid = alerts.query_one(DataTable)
            assert grid.row_count == 3
            await pilot.press("k")  # rank 0's
            await pilot.pause(0.1)
            assert alerts.rank == 0 and grid.row_count == 1
            await pilot.press("k")  # rank 1's
            await pilot.pause(0.1)
            assert grid.row_count == 2
            extra = alerts.query_one("#alerts-extra").render()
            assert "rank 1 (k)" in str(extra)
            # Enter on a rank 1 alert about a layer: the layers screen, on rank 1.
            await keys(pilot, "escape", "L", "k")  # back on the layers, rank 0 shown
            await pilot.pause(0.2)
            assert screen.rank == 0
            await keys(pilot, "escape", "a")
            await pilot.pause(0.2)
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert app.screen is screen and screen.rank == 1

    asyncio.run(scenario())


def test_ranks_screen_snapshot(snap_compare: Any) -> None:
    async def open_ranks(pilot: Any) -> None:
        await pilot.pause(0.3)
        await pilot.press("R")
        await pilot.pause(0.3)

    # Every figure on the screen is a difference of the stream's times: the same on every run.
    assert snap_compare(
        TuidebugApp(source=ScriptedSource([job_stream()])),
        terminal_size=(100, 30),
        run_before=open_ranks,
    )


def test_the_gpu_screen_opened_again_shows_every_rank_s_allocator() -> None:
    # The app keeps extension screens; pushing one again composes new, empty sections.
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource([job_stream()]))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            for _ in range(2):
                await pilot.press("G")
                await pilot.pause(0.2)
                allocator = str(app.screen.query_one("#gpu-allocator", Static).render())
                assert all(f"cuda:{r}" in allocator for r in range(WORLD)), allocator
                await pilot.press("escape")
                await pilot.pause(0.1)

    asyncio.run(scenario())
