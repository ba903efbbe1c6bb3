"""Comparing with another run: its loss overlaid on the live chart (``--compare RUN``, the
``v`` picker), and what a run that cannot be compared with does (a message; the chart goes on).

The compared runs are real: one made by a real ``tuidebug run --detach`` of a training
script, the others written by the supervisor's own history writer (``HistoryStore``) with known
values (a snapshot must not depend on torch's numerics), an empty one, and a corrupt file.
The live run is a scripted source, as in test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from rich.console import Console
from support import ROOT, start_detached, wait_for
from test_dashboard import STARTED, ScriptedSource, finished, history, run_info
from test_loss_chart import _text as chart_text
from textual.pilot import Pilot
from textual.widgets import DataTable

from tuidebug.console.app import TuidebugApp
from tuidebug.console.formatting import format_value
from tuidebug.console.history import MinMaxHistory
from tuidebug.console.screens.compare import CLEAR, CompareScreen
from tuidebug.console.screens.dashboard import DashboardScreen
from tuidebug.console.widgets.loss_chart import LossChart, LossChartRenderable
from tuidebug.paths import RunPaths, find_run, run_paths
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire.messages import StepPoint

STEADY = ROOT / "tests" / "scripts" / "steady.py"
LIVE = "20261130-000000-abcd train.py"  # test_dashboard's run_info


def stored_run(run_id: str, losses: list[tuple[int, float]], script: str = "base.py") -> RunPaths:
    """An ended run's folder, its history written by the supervisor's writer."""
    paths = run_paths(run_id)
    paths.write_meta(
        {"run_id": run_id, "script": script, "args": [], "state": "finished", "exit_code": 0,
         "started": STARTED, "ended": STARTED + 10}
    )  # fmt: skip
    store = HistoryStore(paths.history)
    store.add_points(0, [StepPoint(step, STARTED + step, loss, {}) for step, loss in losses])
    store.close()
    return paths


def base_losses(count: int = 1000) -> list[tuple[int, float]]:
    """A slower curve than the live one (test_dashboard's history), twice as long."""
    return [(s, 2.8 * math.exp(-s / 400) + 0.3 + 0.02 * math.sin(s / 3)) for s in range(1, count)]


async def until(pilot: Pilot[Any], predicate: Any, what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def y_ticks(text: str) -> list[float]:
    return [float(line.split("┤")[0]) for line in text.splitlines() if "┤" in line]


def messages(app: TuidebugApp) -> list[str]:
    return [n.message for n in app._notifications]


def test_a_real_run_overlaid_then_cleared_and_chosen_again_with_v(run_env: dict[str, str]) -> None:
    other = start_detached(STEADY, "60")
    paths = find_run(other)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("ended"), what="the stored run's end")

    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource([[run_info(), *history()]]), compare=other)
        async with app.run_test(size=(140, 34)) as pilot:
            chart = app.dashboard.query_one(LossChart)
            await until(pilot, lambda: chart.overlay is not None, "the overlay")
            compared = app.dashboard.compared
            assert compared is not None and compared.run_id == other
            assert compared.points == 60 and chart.overlay is compared.history
            assert chart.overlay.last_step == 60
            assert any(f"comparing with {other} steady.py (60 steps)" in m for m in messages(app))
            await pilot.pause(0.2)
            text = chart_text(chart)
            legend = text.splitlines()[0]
            assert f"━━ {LIVE}" in legend and f"━━ vs {other} steady.py" in legend, legend
            # The x range is the union (the live run's 500 steps, the other's 60); the y range
            # covers the other run's start (steady.py starts near 8, the live run at 2.4).
            assert text.splitlines()[-1].split() == ["1", "500"]
            assert max(y_ticks(text)) > 4.0, text
            # The overlay is painted in its own colour, from the widget's CSS.
            overlay_style = chart.get_component_rich_style("loss-chart--overlay")
            size = chart.content_size
            lines = chart.make_renderable(size.width, size.height).render_lines(*size)
            cells = [seg for line in lines[1:] for seg in line if seg.style == overlay_style]
            painted = sum(len(seg.text.strip()) for seg in cells)
            assert painted >= 10

            # v: the picker lists the run with its steps and final loss, and a row to clear.
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the picker")
            table = app.screen.query_one(DataTable)
            keys = [row.key.value for row in table.ordered_rows]
            assert keys == [CLEAR, other]
            row = table.get_row(other)
            assert row[1:4] == ["finished", "60", format_value(chart.overlay.last_value)]
            await pilot.press("enter")  # the cursor is on the first row: no comparison
            await until(pilot, lambda: chart.overlay is None, "the overlay cleared")
            assert app.dashboard.compared is None
            assert "━━ vs" not in chart_text(chart)

            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the picker")
            table = app.screen.query_one(DataTable)
            assert [row.key.value for row in table.ordered_rows] == [other]
            await pilot.press("enter")
            await until(pilot, lambda: chart.overlay is not None, "the overlay again")
            assert isinstance(app.screen, DashboardScreen)

    asyncio.run(scenario())


def test_runs_that_cannot_be_compared_are_a_message_and_the_chart_goes_on(
    run_env: dict[str, str],
) -> None:
    empty = stored_run("20261130-000000-0e01", [])
    corrupt = stored_run("20261130-000000-0c02", base_losses(10))
    corrupt.history.write_bytes(b"not a database, a broken copy " * 200)
    good = stored_run("20261130-000000-0d03", base_losses())
    cases = [
        ("nope", "--compare 'nope' names no run; see `tuidebug ls`"),
        (empty.run_id, f"--compare {empty.run_id}: that run recorded no loss (no steps)"),
        (corrupt.run_id, f"--compare {corrupt.run_id}: its history cannot be read"),
        (str(good.folder), None),  # a run folder is accepted too
    ]

    async def scenario(ref: str, error: str | None) -> None:
        app = TuidebugApp(source=ScriptedSource([[run_info(), *history()]]), compare=ref)
        async with app.run_test(size=(100, 30)) as pilot:
            chart = app.dashboard.query_one(LossChart)
            if error is not None:
                await until(pilot, lambda: any(error in m for m in messages(app)), error)
                assert chart.overlay is None and app.dashboard.compared is None
                assert app.model.steps_seen == 500 and "no data yet" not in chart_text(chart)
            else:
                await until(pilot, lambda: chart.overlay is not None, "the overlay")
                assert chart.overlay_label == f"{good.run_id} base.py"
                # The other run is longer: the x axis runs to its last step.
                assert chart_text(chart).splitlines()[-1].split() == ["1", "999"]

    for ref, error in cases:
        asyncio.run(scenario(ref, error))


def test_legend_names_shorten_to_fit_and_an_empty_live_run_still_shows_the_other() -> None:
    other = MinMaxHistory()
    for step, loss in base_losses():
        other.append(step, loss)
    live = MinMaxHistory()
    for step in range(1, 200):
        live.append(step, 2.0 * math.exp(-step / 50))

    def first_line(chart: LossChartRenderable, width: int) -> str:
        console = Console(width=width, color_system=None)
        with console.capture() as capture:
            console.print(chart)
        return capture.get().splitlines()[0]

    def chart(history: MinMaxHistory) -> LossChartRenderable:
        return LossChartRenderable(
            history, width=None, height=12, overlay=other, live_label=LIVE,
            overlay_label="20261130-000000-0d03 base.py",
        )  # fmt: skip

    assert first_line(chart(live), 90).strip() == f"━━ {LIVE}  ━━ vs 20261130-000000-0d03 base.py"
    assert first_line(chart(live), 60).strip() == "━━ this run  ━━ vs 20261130-000000-0d03 base.py"
    assert first_line(chart(live), 40).strip() == "━━ this run  ━━ vs 20261130-000000-0d03…"
    empty = chart(MinMaxHistory())
    console = Console(width=90, color_system=None)
    with console.capture() as capture:
        console.print(empty)
    text = capture.get()
    assert "(no steps yet)" in text and "no data yet" not in text
    assert text.splitlines()[-1].split() == ["1", "999"]
    assert any(ch in text for ch in "⠁⠂⠄⡀⠈⠐⠠⢀")  # the other run's line is there


def test_compare_snapshot(snap_compare: Any, run_env: dict[str, str]) -> None:
    stored_run("20261130-000000-0d03", base_losses())

    async def loaded(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, TuidebugApp)
        chart = app.dashboard.query_one(LossChart)
        await until(pilot, lambda: chart.overlay is not None, "the overlay")
        await until(pilot, lambda: messages(app), "the notification")  # then it goes
        app.clear_notifications()
        await pilot.pause(0.3)

    assert snap_compare(
        TuidebugApp(source=ScriptedSource(finished(), live=False), compare="20261130-000000-0d03"),
        terminal_size=(100, 30),
        run_before=loaded,
    )
