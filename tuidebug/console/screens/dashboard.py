"""The dashboard: status, loss chart, scalars, how the run ended, and the script's output."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from tuidebug.console.extensions import extensions
from tuidebug.console.ranks_state import BAND
from tuidebug.console.run_model import RunModel
from tuidebug.console.widgets.loss_chart import LossChart
from tuidebug.console.widgets.output_tail import OutputTail
from tuidebug.console.widgets.run_header import RunHeader
from tuidebug.console.widgets.sparkline_table import ScalarsTable
from tuidebug.console.widgets.status_banner import StatusBanner

MIN_SIZE = (60, 16)


class DashboardScreen(Screen[None]):
    """The first screen: is the run alive, is the loss going down, what did it print.

    For a job of several ranks, ``k`` cycles what the loss chart and the header show: rank 0,
    1, ..., then every rank's band (min-max bars, the mean smoothed); the output panel marks
    each line with its rank. For a single process the key is off and nothing changes.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "cycle_rank", "Rank"),
    ]

    def __init__(self, model: RunModel) -> None:
        super().__init__()
        self.model = model
        self._ready = False  # the app's frame timer may tick before this screen is composed
        self._world = 1  # the job's size the bindings were last checked for
        self._rows: list[Widget] = []  # extensions' summaries with a row of their own

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        yield RunHeader(self.model, id="header")
        with Horizontal(id="extras"):
            for extension in extensions():
                if extension.make_dashboard_widget is not None and not extension.dashboard_row:
                    yield extension.make_dashboard_widget(self.model.ext[extension.name])
        self._rows = [
            extension.make_dashboard_widget(self.model.ext[extension.name])
            for extension in extensions()
            if extension.make_dashboard_widget is not None and extension.dashboard_row
        ]
        yield from self._rows
        with Horizontal(id="top"):
            with Vertical(id="chart-box"):
                yield LossChart(self.model.loss, id="loss-chart")
            with Vertical(id="side"):
                yield ScalarsTable(id="scalars", spark_width=24)
                yield Static(id="models")
        yield StatusBanner(self.model, id="status-banner")
        yield OutputTail(self.model.output, id="output")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#chart-box").border_title = "loss"
        self._models_shown = -1
        self._ready = True

    def on_resize(self, event: events.Resize) -> None:
        """Below MIN_SIZE, say so plainly instead of drawing a crushed dashboard."""
        width, height = event.size
        tiny = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        self.set_class(tiny, "-tiny")
        if tiny:
            self.query_one("#too-small", Static).update(
                f"The terminal is {width}x{height}; the dashboard needs at least "
                f"{MIN_SIZE[0]}x{MIN_SIZE[1]}.\nMake it larger: nothing is lost, the run goes on."
            )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_rank":
            return self.model.ranks.size > 1  # False hides it from the footer too
        return True

    def action_cycle_rank(self) -> None:
        self.model.ranks.cycle_shown()
        self.model.version += 1
        self.sync()

    def _sync_ranks(self) -> None:
        """A job: the chart and its title show the chosen rank (or the band); output is marked."""
        ranks = self.model.ranks
        if ranks.size != self._world:
            self._world = ranks.size
            self.refresh_bindings()
            self.app.refresh_bindings()
        if ranks.size <= 1:
            return
        self.query_one(OutputTail).show(self.model.outputs)
        chart = self.query_one(LossChart)
        history = ranks.shown_history()
        if chart.history is not history:
            chart.history = history
        box = self.query_one("#chart-box")
        title = (
            "loss · every rank (bars: min-max, line: mean)"
            if ranks.shown is BAND
            else f"loss · rank {ranks.shown}"
        )
        if box.border_title != title:
            box.border_title = title

    def sync(self) -> None:
        """Bring every widget up to the model (once per frame; each redraws only on change)."""
        if not self._ready:
            return
        self._sync_ranks()
        self.query_one(RunHeader).sync()
        model = self.model
        side = self.query_one("#side")
        title = "scalars" if model.scalars else "model"  # no scalars: the table is hidden
        if side.border_title != title:
            side.border_title = title
        self.query_one(ScalarsTable).update_scalars(
            {name: series.history for name, series in model.scalars.items()},
            {name: series.last_step for name, series in model.scalars.items()},
        )
        if self._models_shown != len(model.models) + len(model.optimizers):
            self._models_shown = len(model.models) + len(model.optimizers)
            self.query_one("#models", Static).update(self._describe_models())
        self.query_one(StatusBanner).sync()
        self.query_one(OutputTail).sync()
        chart = self.query_one(LossChart)
        chart.version = self.model.version
        for widget in (*self.query_one("#extras").children, *self._rows):
            widget.sync()  # type: ignore[attr-defined]

    def _describe_models(self) -> str:
        # In a job every rank reports the same model: the first rank's stand for the job.
        found = [m.rank for m in (*self.model.models, *self.model.optimizers)]
        first = min(found, default=0)
        lines = [
            f"[b]{m.name}[/b] {m.class_name} {m.parameters:,} params"
            for m in self.model.models
            if m.rank == first
        ]
        lines += [
            f"[b]optim[/b] {o.class_name} lr={o.lr:g}"
            if o.lr is not None
            else f"[b]optim[/b] {o.class_name}"
            for o in self.model.optimizers
            if o.rank == first
        ]
        return "\n".join(lines) or "[dim]waiting for the first step[/dim]"
