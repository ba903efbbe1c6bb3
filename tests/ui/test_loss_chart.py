"""LossChart in a tiny app: axis labels, log toggle, repaint on version, and a snapshot.

The Pilot tests are async functions run through asyncio.run (no async pytest plugin needed).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from rich.console import Console
from textual.app import App, ComposeResult

from tuidebug.console.history import MinMaxHistory
from tuidebug.console.widgets.loss_chart import LossChart, LossChartRenderable
from tuidebug.console.widgets.sparkline_table import ScalarsTable, plan_columns


def _history(n: int = 2000) -> MinMaxHistory:
    h = MinMaxHistory()
    for step in range(n):
        # Deterministic: a decaying loss with a ripple, one spike and one NaN.
        v = 2.0 * math.exp(-step / (n / 5)) + 0.05 + 0.03 * math.sin(step * 0.7)
        if step == n // 3:
            v = 9.0
        if step == n // 2:
            v = math.nan
        h.append(step, v)
    h.mark(n - 200, "restore")
    for step in range(n - 200, n):
        h.append(step, 0.2 + 0.01 * math.sin(step))
    return h


class ChartApp(App[None]):
    CSS = "LossChart { height: 12; border: round $primary; }"

    def __init__(self, history: MinMaxHistory | None) -> None:
        super().__init__()
        self.history = history

    def compose(self) -> ComposeResult:
        yield LossChart(self.history)


def _text(chart: LossChart) -> str:
    size = chart.content_size
    console = Console(width=size.width, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(chart.make_renderable(size.width, size.height))
    return capture.get()


def test_axis_labels_and_log_toggle() -> None:
    asyncio.run(_axis_labels_and_log_toggle())


async def _axis_labels_and_log_toggle() -> None:
    app = ChartApp(_history())
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        linear = _text(chart)
        assert "┤" in linear and "└" in linear
        assert "8┤" in linear  # y ticks: 0, 2, 4, 6, 8
        assert " 0 " in linear.splitlines()[-1] + " "  # first step
        assert "1999" in linear  # last real step (the x axis went on past the rewind)
        assert "1 NaN/inf" in linear and "×" in linear
        assert "restore@1800" in linear
        chart.log_scale = True
        await pilot.pause()
        log = _text(chart)
        assert log != linear
        assert "0.1┤" in log or "0.2┤" in log  # log ticks
        # What the widget actually paints (through Textual's styles) shows the labels too.
        painted = "\n".join(strip.text for strip in chart.render_lines(chart.region.reset_offset))
        assert "restore@1800" in painted and "0.2┤" in painted


def test_repaints_only_when_version_changes() -> None:
    asyncio.run(_repaints_only_when_version_changes())


async def _repaints_only_when_version_changes() -> None:
    history = MinMaxHistory()
    app = ChartApp(history)
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        calls: list[Any] = []
        original = chart.refresh

        def counting_refresh(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return original(*args, **kwargs)

        chart.refresh = counting_refresh  # type: ignore[method-assign]
        assert "no data yet" in _text(chart)
        history.extend(range(10), [1.0] * 10)
        chart.version = 1
        chart.version = 1
        await pilot.pause()
        assert len(calls) == 1
        assert "no data yet" not in _text(chart)


def test_edge_cases_render() -> None:
    console = Console(width=60, color_system=None)
    cases: list[tuple[list[float], bool]] = [
        ([], False),
        ([1.0], False),
        ([math.nan] * 5, False),
        ([3.0] * 20, False),
        ([-1.0, 0.0, 1.0, 10.0], True),
        ([-1.0, -2.0], True),
        ([1e-7, 2e-7], False),
        ([1e9, 3e9], True),
    ]
    for values, log in cases:
        h = MinMaxHistory()
        h.extend(range(len(values)), values)
        for width, height in ((60, 10), (10, 3), (1, 1), (200, 50)):
            lines = LossChartRenderable(h, log_scale=log).render_lines(width, height)
            assert len(lines) == height
            assert all(sum(len(s.text) for s in line) == width for line in lines)
    h = MinMaxHistory()
    h.extend(range(4), [-1.0, 0.0, 1.0, 10.0])
    with console.capture() as capture:
        console.print(LossChartRenderable(h, width=60, height=8, log_scale=True))
    assert "clipped (log)" in capture.get()
    with console.capture() as capture:
        console.print(LossChartRenderable(None, width=60, height=8))
    assert "no data yet" in capture.get()


def test_snapshot(snap_compare: Any) -> None:
    assert snap_compare(ChartApp(_history()), terminal_size=(80, 24))


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ScalarsTable(spark_width=8)


def test_scalars_table_updates_in_place() -> None:
    asyncio.run(_scalars_table_updates_in_place())


async def _scalars_table_updates_in_place() -> None:
    lr, gnorm = MinMaxHistory(), MinMaxHistory()
    lr.extend(range(100), [1e-3] * 100)
    gnorm.extend(range(100), [1.0 + (50.0 if i == 40 else 0.0) for i in range(100)])
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(ScalarsTable)
        table.update_scalars({"lr": lr, "grad_norm": gnorm}, {"lr": 1, "grad_norm": 1})
        await pilot.pause()
        assert table.row_count == 2
        assert str(table.get_cell("grad_norm", "max")) == "51.0"
        assert "█" in str(table.get_cell("grad_norm", "trend"))  # the spike
        gnorm.append(100, math.nan)
        table.update_scalars({"lr": lr, "grad_norm": gnorm}, {"lr": 1, "grad_norm": 2})
        await pilot.pause()
        assert table.row_count == 2
        assert str(table.get_cell("grad_norm", "last")) == "nan"
        assert "!" in str(table.get_cell("grad_norm", "trend"))


def test_scalar_columns_fit_the_width() -> None:
    assert [key for key, _ in plan_columns(24, 24)] == ["name", "last", "trend"]
    assert [key for key, _ in plan_columns(44, 24)] == ["name", "last", "min", "max", "trend"]
    assert [key for key, _ in plan_columns(20, 24)] == ["name", "last"]
    for width in range(0, 120):
        widths = dict(plan_columns(width, 24))
        assert sum(widths.values()) <= max(width, 20)  # name and last always
        assert "trend" not in widths or 3 <= widths["trend"] <= 24


class NarrowTableApp(App[None]):
    CSS = "ScalarsTable { width: 30; }"

    def compose(self) -> ComposeResult:
        yield ScalarsTable(spark_width=24)


def test_scalars_table_fits_its_width_and_hides_while_empty() -> None:
    asyncio.run(_scalars_table_fits())


async def _scalars_table_fits() -> None:
    lr = MinMaxHistory()
    lr.extend(range(50), [1e-3 * (1 + i % 7) for i in range(50)])
    app = NarrowTableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(ScalarsTable)
        await pilot.pause()
        assert not table.display  # no scalar yet: no empty header
        table.update_scalars({"learning_rate": lr})
        await pilot.pause()
        assert table.display and table.row_count == 1
        keys = [column.key.value for column in table.ordered_columns]
        assert keys == ["name", "last", "trend"]  # 29 cells: no room for min and max
        # Nothing to scroll sideways: the columns fit, no scrollbar row under the table.
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert not table.show_horizontal_scrollbar
        assert str(table.get_cell("learning_rate", "name")) == "learning_r"  # 10 + a gap
        trend = str(table.get_cell("learning_rate", "trend"))
        assert len(trend) == dict(plan_columns(29, 24))["trend"] and "█" in trend
        await pilot.resize_terminal(120, 24)
        app.query_one(ScalarsTable).styles.width = 60
        await pilot.pause()
        keys = [column.key.value for column in table.ordered_columns]
        assert keys == ["name", "last", "min", "max", "trend"]  # rebuilt, row kept
        assert str(table.get_cell("learning_rate", "max")) == "0.00700"
