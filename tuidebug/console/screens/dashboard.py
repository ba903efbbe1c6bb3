"""The dashboard: status, loss chart, scalars, how the run ended, and the script's output."""

from __future__ import annotations

from typing import ClassVar

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from tuidebug.console.compare import CompareCurve, CompareError, load_compare, run_label
from tuidebug.console.extensions import extensions
from tuidebug.console.ranks_state import BAND
from tuidebug.console.run_model import RunModel
from tuidebug.console.widgets.loss_chart import LossChart
from tuidebug.console.widgets.output_tail import OutputTail
from tuidebug.console.widgets.run_header import RunHeader
from tuidebug.console.widgets.sparkline_table import ScalarsTable
from tuidebug.console.widgets.status_banner import StatusBanner

MIN_SIZE = (60, 16)
PICKER_RUNS = 50  # the compare picker lists at most this many past runs, newest first


class DashboardScreen(Screen[None]):
    """The first screen: is the run alive, is the loss going down, what did it print.

    For a job of several ranks, ``k`` cycles what the loss chart and the header show: rank 0,
    1, ..., then every rank's band (min-max bars, the mean smoothed); the output panel marks
    each line with its rank. For a single process the key is off and nothing changes.

    ``v`` picks another run whose loss the chart overlays (``compare``: ``--compare RUN``
    starts with one); the curve is read in a worker thread, and a run that cannot be shown is
    a notification, never a stop.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "cycle_rank", "Rank"),
        Binding("v", "compare", "Compare", show=False),  # the footer is full at 80 columns
    ]

    def __init__(self, model: RunModel, compare: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.compare = compare
        """What ``--compare`` named: loaded once the screen is up."""
        self.compared: CompareCurve | None = None
        """The run the chart overlays now."""
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
        self._models_shown: tuple[int, int] = (-1, -1)
        self._ready = True
        if self.compare:
            self.compare_with(self.compare)

    # --- comparing with another run ------------------------------------------------------------

    def action_compare(self) -> None:
        """Pick the run to compare with (or none) from the past runs."""
        from tuidebug.console.screens.compare import CLEAR, CompareScreen
        from tuidebug.paths import list_runs
        from tuidebug.runs import summarize

        own = self.model.info.run_id if self.model.info is not None else None
        runs = [summarize(paths) for paths in list_runs()[:PICKER_RUNS] if paths.run_id != own]
        current = self.compared.run_id if self.compared is not None else None

        def chosen(ref: str | None) -> None:
            if ref == CLEAR:
                self.show_compare(None)
            elif ref is not None:
                self.compare_with(ref)

        self.app.push_screen(CompareScreen(runs, current), chosen)

    @work(thread=True, exclusive=True, group="compare")
    def compare_with(self, ref: str) -> None:
        """Read the run ``ref`` names and overlay its loss (a worker: a long history takes a
        moment); a run that cannot be shown is an error notification, and the chart goes on."""
        try:
            curve = load_compare(ref)
        except CompareError as error:
            self.app.call_from_thread(self.notify, str(error), severity="error", timeout=10)
            return
        if not get_current_worker().is_cancelled:  # another choice came since
            self.app.call_from_thread(self.show_compare, curve)

    def show_compare(self, curve: CompareCurve | None) -> None:
        """Overlay ``curve`` on the loss chart (None: clear it); the chart repaints once."""
        self.compared = curve
        chart = self.query_one(LossChart)
        chart.overlay = curve.history if curve is not None else None
        chart.overlay_label = curve.label if curve is not None else ""
        if curve is not None:
            self.notify(f"comparing with {curve.label} ({curve.points:,} steps)")

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
        hparams = model.ext.get("hparams")
        shown = (len(model.models) + len(model.optimizers), getattr(hparams, "version", 0))
        if self._models_shown != shown:
            self._models_shown = shown
            self.query_one("#models", Static).update(self._describe_models())
        self.query_one(StatusBanner).sync()
        self.query_one(OutputTail).sync()
        chart = self.query_one(LossChart)
        chart.version = self.model.version
        if model.info is not None and self.compared is not None:
            label = run_label(model.info.run_id, model.info.script)
            if chart.live_label != label:
                chart.live_label = label
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
        optimizers = [o for o in self.model.optimizers if o.rank == first]
        live = self._live_lrs()
        for i, o in enumerate(optimizers):
            # The lr as of now (a scheduler, a change from the console), else as first seen.
            lrs = live[i] if i < len(live) and live[i] else [o.lr] if o.lr is not None else []
            # Groups with one value (decay / no-decay) show it once; 3 digits (a warm-up's
            # 0.00299997 reads 0.003).
            shown = dict.fromkeys(f"{v:.3g}" for v in lrs)
            lr = " lr=" + "/".join(shown) if shown else ""
            lines.append(f"[b]optim[/b] {o.class_name}{lr}")
        return "\n".join(lines) or "[dim]waiting for the first step[/dim]"

    def _live_lrs(self) -> list[list[float]]:
        """Each optimizer's param groups' lr from the run's latest hyperparameter table, in
        the order the probe found them (the table's order too)."""
        table = getattr(self.model.ext.get("hparams"), "table", None)
        if table is None:
            return []
        return [[g.lr for g in o.groups if g.lr is not None] for o in table.optimizers]
