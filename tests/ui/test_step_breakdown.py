"""The step-time bar on the dashboard and the profile screen (key P) under Pilot, fed scripted
``StepPhases`` and ``ProfileResult`` messages with known figures."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from test_dashboard import ScriptedSource, history, run_info

from tuidebug.console.app import TuidebugApp
from tuidebug.console.screens.profile import ProfileScreen
from tuidebug.console.widgets.step_breakdown import StepBreakdown, breakdown_lines, stacked_bar
from tuidebug.wire.messages import Command, HistoryDone, Message
from tuidebug.wire.phase_messages import ProfileOp, ProfileResult, StepPhases


def phases(first: int, steps: int, data_ms: float) -> StepPhases:
    """``steps`` steps of (data, 2 ms forward, 1.5 backward, 0.5 optimizer, 1 other)."""
    per = {"data": data_ms, "forward": 2.0, "backward": 1.5, "optimizer": 0.5}
    total = sum(per.values()) + 1.0
    return StepPhases(
        step=first + steps - 1,
        first=first,
        steps=steps,
        total=total * steps / 1e3,
        **{k: v * steps / 1e3 for k, v in per.items()},  # type: ignore[arg-type]
        longest=total / 1e3,
    )


def result() -> ProfileResult:
    return ProfileResult(
        step=305,
        first=301,
        trace="/runs/x/profiles/profile-301-305.json",
        trace_bytes=5_400_000,
        ops=[
            ProfileOp("aten::mm", 57, 1800.0, 1900.0, 0.0, "[[1024, 64], [64, 256]]"),
            ProfileOp("aten::sum", 72, 600.0, 700.0),
        ],
        timeline=[[0.005, 0.002, 0.0015, 0.0005, 0.001, 0.01]] * 5,
        wall=0.05,
        overhead=0.8,
    )


def _text(widget: Any, width: int = 100) -> str:
    console = Console(width=width, record=True)
    console.print(widget.content)
    return console.export_text()


def test_stacked_bar_fills_its_width_in_proportion() -> None:
    bar = stacked_bar({"data": 6, "forward": 2, "backward": 1, "optimizer": 1, "other": 0}, 40)
    assert len(bar) == 40
    assert bar.plain.startswith(" " * 10 + "data")  # 24 cells of 40
    assert "other" not in bar.plain
    # A tiny phase still gets a cell.
    assert len(stacked_bar({"data": 1000, "forward": 1, "backward": 0, "optimizer": 0}, 20)) == 20


def test_dashboard_bar_and_the_profile_screen() -> None:
    async def scenario() -> None:
        batches: list[Message] = [phases(2, 100, 3.0), phases(102, 100, 5.0)]
        source = ScriptedSource(
            [[run_info(), *history(300), *batches, HistoryDone(steps=300)], [result()]]
        )
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause(0.4)
            bar = app.screen.query_one(StepBreakdown)
            assert bar.display
            text = _text(bar)
            # The recent 200 steps: data (3 + 5) / 2 = 4 ms of a 9 ms step.
            assert "step 9.00 ms" in text and "steps 2-201" in text
            assert "data 4.00 ms 44%" in text and "fwd 2.00 ms 22%" in text
            assert "opt 0.50 ms 6%" in text and "other 1.00 ms 11%" in text
            # On a narrow terminal the bar's colours name the phases.
            state = app.model.ext["phases"]  # type: ignore[attr-defined]
            figures = breakdown_lines(state.shown_rank(), 60)[1].plain
            assert "4.00ms 44%" in figures and "2.00ms 22%" in figures and "fwd" not in figures
            await pilot.press("P")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, ProfileScreen)
            status = _text(screen.query_one("#profile-status"))
            assert "steps 301-305" in status and "profile-301-305.json" in status
            table = screen.query_one("#profile-ops")
            assert table.row_count == 2  # type: ignore[attr-defined]
            assert table.get_row_at(0)[:4] == ["aten::mm", "57", "1.80 ms", "75%"]  # type: ignore[attr-defined]
            timeline = _text(screen.query_one("#profile-timeline"))
            assert "step 301: 10.00 ms" in timeline and "data 5.00" in timeline
            phases_text = _text(screen.query_one("#profile-phases"))
            assert "backward" in phases_text and "1.50 ms" in phases_text
            await pilot.press("c")
            await pilot.press("C")
            asked = [m for m in source.sent if isinstance(m, Command) and m.name == "profile"]
            assert [m.args["steps"] for m in asked] == ["5", "20"]
            assert all(m.rank == -1 for m in asked)
            await pilot.press("escape")
            assert not isinstance(app.screen, ProfileScreen)

    asyncio.run(scenario())
