"""The layers screen with Pilot: rows, in-place updates, sort, filter, detail, NaN jump, scale.

Fed with hand-made messages (deterministic, no torch import). Async Pilot tests run through
asyncio.run, like the other UI tests.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from textual.app import App
from textual.widgets.data_table import ColumnKey

from tuidebug.console.layers_model import LayersModel
from tuidebug.console.screens.layers import LayerDetailScreen, LayersScreen
from tuidebug.console.widgets.histogram import HistogramRenderable
from tuidebug.console.widgets.layer_detail import LayerDetail
from tuidebug.console.widgets.layer_table import LayerTable
from tuidebug.wire.layer_messages import Histogram, LayerStats, NonFinite
from tuidebug.wire.layer_messages import LayerTable as TableMsg


def _table(blocks: int) -> TableMsg:
    """model -> blocks.{i} -> (fc, act); then head."""
    names, types, depths, params = [""], ["Net"], [0], [0]
    p_names: list[str] = []
    p_layers: list[int] = []
    for i in range(blocks):
        names += [f"blocks.{i}", f"blocks.{i}.fc", f"blocks.{i}.act"]
        types += ["Block", "Linear", "ReLU"]
        depths += [1, 2, 2]
        params += [272, 272, 0]
        fc = len(names) - 2
        p_names += [f"blocks.{i}.fc.weight", f"blocks.{i}.fc.bias"]
        p_layers += [fc, fc]
    names.append("head")
    types.append("Linear")
    depths.append(1)
    params.append(34)
    p_names += ["head.weight", "head.bias"]
    p_layers += [len(names) - 1] * 2
    params[0] = sum(params[1:]) - sum(
        p for p, d in zip(params[1:], depths[1:], strict=False) if d == 2
    )
    return TableMsg(
        model="net",
        base=0,
        names=names,
        types=types,
        depths=depths,
        params=params,
        param_names=p_names,
        param_layers=p_layers,
        param_shapes=["16×16", "16"] * blocks + ["2×16", "2"],
    )


def _stats(table: TableMsg, step: int, *, nan_in: int | None = None, batch: int = 8) -> LayerStats:
    layers = [*list(range(1, len(table.names))), 0]
    act: list[float] = []
    shapes = []
    for layer in layers:
        base = (layer % 7) * 0.1 + step * 0.01
        dead = table.types[layer] == "ReLU" and layer == 3
        nonfinite = 5 if layer == nan_in else 0
        act += [base, 1.0 + base, -2.0, 2.0 + base, 1.0 if dead else 0.25, nonfinite, -1]
        shapes.append(f"{batch}×2" if table.names[layer] in ("head", "") else f"{batch}×16")
    n_params = len(table.param_names)
    hist = Histogram(2, "act", -1, -2.0, 2.0, [i * (31 - i) for i in range(32)], 0)
    weight = Histogram(2, "weight", 0, -0.5, 0.5, [abs(16 - i) for i in range(32)], 0)
    return LayerStats(
        step=step,
        layers=layers,
        calls=[1] * len(layers),
        act=act,
        out_shapes=shapes,
        in_shapes=[f"({batch}×16)"] * len(layers),
        dtypes=["float32"] * len(layers),
        devices=["cpu"] * len(layers),
        params=list(range(n_params)),
        grad_norm=[0.1 + 0.01 * i for i in range(n_params)],
        weight_norm=[2.0] * n_params,
        update_ratio=[1e-3] * (n_params - 1) + [0.5],
        histograms=[hist, weight],
        cost=0.0004,
        interval=25,
    )


class LayersApp(App[None]):
    def __init__(self, model: LayersModel) -> None:
        super().__init__()
        self.model = model
        self.focused_layers: list[int] = []

    def on_mount(self) -> None:
        self.push_screen(LayersScreen(self.model, on_focus=self.focused_layers.append))


def _model(blocks: int = 4, steps: int = 3) -> LayersModel:
    model = LayersModel()
    table = _table(blocks)
    model.fold([table])
    for step in range(1, steps + 1):
        model.fold([_stats(table, step * 10)])
    return model


def _painted(widget: Any) -> str:
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


def _cell(table: LayerTable, layer: int, column: str) -> str:
    return str(table.get_cell(str(layer), column))


def test_rows_update_in_place_sort_and_filter() -> None:
    asyncio.run(_rows_update_in_place_sort_and_filter())


async def _rows_update_in_place_sort_and_filter() -> None:
    model = _model()
    app = LayersApp(model)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, LayersScreen)
        table = screen.table
        assert table.row_count == len(model.rows) == 14
        assert _cell(table, 2, "name") == "    fc"  # tree indentation (depth 2)
        assert _cell(table, 2, "params") == "272"
        assert _cell(table, 2, "shape") == "8×16"
        adds: list[Any] = []
        original_add = table.add_row

        def counting_add(*args: Any, **kwargs: Any) -> Any:
            adds.append(args)
            return original_add(*args, **kwargs)

        table.add_row = counting_add  # type: ignore[method-assign]
        tmsg = _table(4)
        model.fold([_stats(tmsg, 40, batch=5)])
        screen.sync()
        await pilot.pause()
        assert not adds  # updated in place, no rebuild
        assert _cell(table, 2, "shape") == "5×16*"  # shape change marked
        assert list(model.rows[2].shapes) == ["8×16", "5×16"]
        # Sort: s moves to the next column (type), again to params; r reverses.
        await pilot.press("s", "s")
        assert table.sort_column == "params"
        await pilot.press("r")
        assert table.sort_reverse
        first = table.ordered_rows[0].key.value
        assert first == "0"  # the root holds the most parameters
        await pilot.press("t")
        assert table.sort_column is None and table.ordered_rows[0].key.value == "0"
        # Filter by name.
        await pilot.press("slash", *"head")
        await pilot.pause()
        assert table.filter_text == "head" and table.row_count == 1
        await pilot.press("enter")
        assert table.has_focus
        await pilot.press("slash", "backspace", "backspace", "backspace", "backspace")
        await pilot.pause()
        assert table.row_count == 14


def test_columns_widen_when_statistics_arrive_after_the_tree() -> None:
    asyncio.run(_columns_widen_when_statistics_arrive_after_the_tree())


async def _columns_widen_when_statistics_arrive_after_the_tree() -> None:
    # The screen opened before the first sample: every statistic read "—" when the rows were
    # added. Values written in place later must not be cut to the header's width.
    model = LayersModel()
    tmsg = _table(2)
    model.fold([tmsg])
    app = LayersApp(model)
    async with app.run_test(size=(200, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, LayersScreen)
        table = screen.table
        stats = _stats(tmsg, 10)
        stats.act = [v * 1e-4 - 1.2345e-5 for v in stats.act]  # long cells: "-1.23e-5"
        model.fold([stats])
        screen.sync()
        await pilot.pause()
        await pilot.pause()
        for column in ("mean", "dtype", "shape", "grad_norm"):
            cell = table.get_cell("2", column)
            assert table.columns[ColumnKey(column)].content_width >= cell.cell_len, column
        assert "float32" in _painted(table)


def test_detail_histograms_chart_and_nan_jump() -> None:
    asyncio.run(_detail_histograms_chart_and_nan_jump())


async def _detail_histograms_chart_and_nan_jump() -> None:
    model = _model()
    app = LayersApp(model)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, LayersScreen)
        await pilot.press("down")  # row 1: blocks.0
        await pilot.press("enter")
        await pilot.pause()
        detail = app.screen
        assert isinstance(detail, LayerDetailScreen) and detail.index == 1
        assert app.focused_layers == [1]
        await pilot.press("escape")
        await pilot.pause()
        assert app.focused_layers == [1, -1]
        screen.table.select_layer(2)
        await pilot.press("enter")
        await pilot.pause()
        widget = app.screen.query_one(LayerDetail)
        info = _painted(app.screen.query_one("#layer-info"))
        histograms = _painted(app.screen.query_one("#layer-histograms"))
        assert "act -2.00 … 2.00" in histograms and "weight -0.500 … 0.500" in histograms
        assert "net.blocks.0.fc" in info and "(8×16)" in info
        assert widget.stat == "std"
        await pilot.press("c")
        assert widget.stat == "mean"
        await pilot.press("escape")
        # A NaN located in blocks.2.act (layer 9): the screen jumps to it.
        tmsg = _table(4)
        model.fold([_stats(tmsg, 50, nan_in=9)])
        model.fold(
            [NonFinite(step=50, source="forward", layer=9, name="net.blocks.2.act", located=True)]
        )
        screen.sync()
        await pilot.pause()
        assert screen.table.selected_layer() == 9
        assert "NaN/Inf at step 50 in net.blocks.2.act" in _painted(
            screen.query_one("#layers-status")
        )
        assert "nonfinite" in model.rows[9].anomalies()


def test_histogram_renderable() -> None:
    h = Histogram(0, "act", -1, -1.0, 1.0, [0, 1, 4, 9, 16, 9, 4, 1] * 4, 3)
    lines = HistogramRenderable(h, "act", height=4).render_lines(64)
    assert len(lines) == 4
    assert all(sum(len(s.text) for s in line) == 64 for line in lines)
    assert "█" in "".join(s.text for s in lines[0])
    assert "3 NaN/inf" in "".join(s.text for s in lines[-1])
    empty = HistogramRenderable(None, "grad", height=3).render_lines(20)
    assert "no histogram" in "".join(s.text for s in empty[-1])
    bad = Histogram(0, "act", -1, -math.inf, math.inf, [0] * 32, 10)
    assert "10 non-finite" in "".join(
        s.text for s in HistogramRenderable(bad, height=2).render_lines(40)[-1]
    )


def test_thousand_modules_update_a_bounded_number_of_rows_per_frame() -> None:
    asyncio.run(_thousand_modules())


async def _thousand_modules() -> None:
    model = LayersModel()
    tmsg = _table(400)  # 1,202 modules
    model.fold([tmsg, _stats(tmsg, 1)])
    app = LayersApp(model)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, LayersScreen)
        table = screen.table
        assert table.row_count == 1202
        model.fold([_stats(tmsg, 2)])  # every row changes
        before = table.row_updates
        screen.sync()
        per_frame = table.row_updates - before
        assert 0 < per_frame <= 120 + 30  # the visible rows first, then a bounded batch
        frames = 1
        while table._pending:
            screen.sync()
            frames += 1
        assert frames <= 12
        await pilot.pause()
        assert _cell(table, 1201, "mean").startswith("0.")


def test_snapshot(snap_compare: Any) -> None:
    model = _model()
    tmsg = _table(4)
    model.fold([_stats(tmsg, 40, nan_in=9)])
    model.fold([NonFinite(step=40, source="forward", layer=9, name="net.blocks.2.act")])
    assert snap_compare(LayersApp(model), terminal_size=(80, 24))
