"""The detail of one module: shapes, parameters, histograms and the history of one statistic.

Redraws only when the model's version changed (:meth:`LayerDetail.sync`, once per frame). The
chart is the dashboard's :class:`LossChart` over the module's :class:`MinMaxHistory` of the
chosen statistic (``c`` cycles through ``TRACKED``).
"""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tuidebug.console.layers_model import ANOMALIES, TRACKED, LayerRow, LayersModel
from tuidebug.console.widgets.histogram import HistogramRenderable
from tuidebug.console.widgets.layer_table import ANOMALY_STYLES
from tuidebug.console.widgets.loss_chart import LossChart, format_number
from tuidebug.wire.layer_messages import ACT_FIELDS, Histogram

__all__ = ["LayerDetail", "detail_text"]


def _norm(value: float) -> str:
    return "—" if value == -1.0 else format_number(value)


def detail_text(model: LayersModel, row: LayerRow) -> RenderableType:
    """Identity, shapes, activation statistics and parameters of one module."""
    head = Text()
    head.append(row.name, style="bold")
    head.append(f"  {row.type}  {row.params:,} params", style="")
    if row.step:
        head.append(f"  step {row.step}", style="bright_black")
    for kind in row.anomalies():
        head.append(f"  {ANOMALIES[kind]}", style=ANOMALY_STYLES[kind])
    lines: list[RenderableType] = [head]
    shapes = Text()
    shapes.append("in  ", style="bright_black")
    shapes.append(row.in_shape or "—")
    shapes.append("\nout ", style="bright_black")
    shapes.append(row.out_shape or "—")
    if row.dtype:
        shapes.append(f"  {row.dtype} {row.device}", style="bright_black")
    if row.calls > 1:
        shapes.append(f"  ({row.calls} calls a step)", style="bright_black")
    if len(row.shapes) > 1:
        shapes.append("\nrecent shapes ", style="bright_black")
        shapes.append(" | ".join(reversed(row.shapes)), style="cyan")
    lines.append(shapes)
    if row.act is not None:
        act = Text()
        for name, value in zip(ACT_FIELDS[:5], row.act[:5], strict=True):
            act.append(f"{name} ", style="bright_black")
            shown = f"{value:.1%}" if name == "zeros" and value == value else format_number(value)
            act.append(f"{shown}  ")
        if row.act[5]:
            nan = int(row.act[6])
            split = f" ({nan} NaN)" if nan >= 0 else ""
            count = int(row.act[5])
            shown = "some" if count < 0 else str(count)
            act.append(f"{shown} NaN/inf{split}", style="bold red")
        lines.append(act)
    params = model.params_of(row.index)
    if params:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bright_black")
        for column in ("param", "shape", "grad‖", "w‖", "Δw/w"):
            table.add_column(column, no_wrap=True)
        for p in params:
            table.add_row(
                p.name.rsplit(".", 1)[-1],
                p.shape,
                _norm(p.grad_norm),
                _norm(p.weight_norm),
                _norm(p.update_ratio),
            )
        lines.append(table)
    return Group(*lines)


def _histograms(row: LayerRow, width: int) -> RenderableType:
    hists = row.histograms
    act = hists.get(("act", -1))
    first = row.param_indices[0] if row.param_indices else None
    weight: Histogram | None = hists.get(("weight", first)) if first is not None else None
    grad: Histogram | None = hists.get(("grad", first)) if first is not None else None
    parts: list[RenderableType] = [HistogramRenderable(act, "act", height=3, width=width)]
    if first is not None:
        parts.append(HistogramRenderable(weight, "weight", height=3, width=width))
        parts.append(HistogramRenderable(grad, "grad", height=3, width=width))
    return Group(*parts)


class LayerDetail(Vertical):
    """Everything about one module. ``index`` is the layer; ``stat`` the charted statistic."""

    DEFAULT_CSS = """
    LayerDetail {
        height: 1fr;
    }
    LayerDetail > #layer-info {
        height: auto;
    }
    LayerDetail > #layer-histograms {
        height: auto;
    }
    LayerDetail > LossChart {
        height: 1fr;
        min-height: 5;
        border-top: solid $primary;
        border-title-color: $text;
    }
    """

    def __init__(
        self, model: LayersModel, index: int, *, id: str | None = None, stat: str = "std"
    ) -> None:
        super().__init__(id=id)
        self.model = model
        self.index = index
        self.stat = stat if stat in TRACKED else TRACKED[0]
        self._version = -1

    def compose(self) -> ComposeResult:
        yield Static(id="layer-info")
        yield Static(id="layer-histograms")
        yield LossChart(None, id="layer-chart")

    def on_mount(self) -> None:
        self.sync(force=True)

    def cycle_stat(self) -> str:
        """Chart the next statistic of ``TRACKED``."""
        self.stat = TRACKED[(TRACKED.index(self.stat) + 1) % len(TRACKED)]
        self.sync(force=True)
        return self.stat

    def sync(self, force: bool = False) -> None:
        if not force and self.model.version == self._version:
            return
        self._version = self.model.version
        row = self.model.row(self.index)
        if row is None:
            return
        self.query_one("#layer-info", Static).update(detail_text(self.model, row))
        width = max(10, self.size.width or 80)
        self.query_one("#layer-histograms", Static).update(_histograms(row, min(width, 64)))
        chart = self.query_one(LossChart)
        history = row.histories.get(self.stat)
        chart.border_title = f"{self.stat} per sample  (c: next statistic)"
        if chart.history is not history:
            chart.history = history
        chart.version = self.model.version
        log = self.stat in ("grad_norm", "update_ratio")
        finite = history.finite_range() if history is not None else None
        chart.log_scale = log and finite is not None and finite[0] > 0 and math.isfinite(finite[1])
