"""The layers screen (every module, sortable and filterable) and the detail of one module.

Keyboard only: ``/`` filters by name (Enter or Escape goes back to the table), ``s`` sorts by
the next column and ``S`` by the previous one, ``r`` reverses, ``t`` returns to tree order,
``n`` jumps to the module where a NaN/Inf was located, Enter opens a module's detail (Escape
closes it). The app calls :meth:`sync` once per frame. In a job whose ranks each sent layer
data (``ranks``, a :class:`RankedLayers`), ``k`` cycles the rank shown; a NaN/Inf located on
a rank switches to that rank.

``on_focus`` (optional) is called with the layer whose detail is open (-1 when it closes): the
app forwards it to the probe, which then gives that layer histograms on every sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tuidebug.console.layers_model import ANOMALIES, LayersModel, RankedLayers
from tuidebug.console.widgets.layer_detail import LayerDetail
from tuidebug.console.widgets.layer_table import ANOMALY_STYLES, COLUMNS, LayerTable
from tuidebug.console.widgets.loss_chart import format_number

__all__ = ["LayerDetailScreen", "LayersScreen", "legend_text", "status_text"]

FocusCallback = Callable[[int], None]


def legend_text() -> Text:
    text = Text()
    for kind, meaning in ANOMALIES.items():
        text.append("■ ", style=ANOMALY_STYLES[kind])
        text.append(f"{meaning}  ", style="bright_black")
    return text


def status_text(
    model: LayersModel, table: LayerTable | None = None, rank: tuple[int, int] | None = None
) -> Text:
    """One line: modules, the sampled step and cadence, the sort, any NaN/Inf; ``rank`` is
    (rank shown, ranks with data) in a job."""
    text = Text()
    if rank is not None:
        text.append(f"rank {rank[0]} ({rank[1]} ranks, k) · ", style="bold cyan")
    if not model.rows:
        text.append("waiting for the probe to report the model's modules…", style="bright_black")
        return text
    nf = model.nonfinite
    if nf is not None:
        # First: at 80 columns the end of the line may be cut.
        where = f" in {nf.name}" if nf.name else ""
        state = "" if nf.located else " (locating…)"
        text.append(f"NaN/Inf at step {nf.step}{where}{state} (n) · ", style="bold red")
    text.append(f"{len(model.rows):,} modules", style="bold")
    if model.samples:
        text.append(f" · step {model.step}")
        if model.interval:
            text.append(f" · every {model.interval}")
        text.append(f" · {format_number(model.cost * 1e3)} ms/sample", style="bright_black")
    else:
        text.append(" · no sample yet", style="bright_black")
    if table is not None:
        if table.sort_column is not None:
            label = dict(COLUMNS)[table.sort_column]
            text.append(f" · sort {label} {'↓' if table.sort_reverse else '↑'}")
        if table.filter_text:
            text.append(f" · {table.row_count} match “{table.filter_text}”")
    return text


class LayersScreen(Screen[None]):
    """Every module of the run's models, with the latest sampled statistics."""

    DEFAULT_CSS = """
    LayersScreen #layers-status { height: 1; padding: 0 1; }
    LayersScreen #layers-filter { height: 3; border: round $primary; display: none; }
    LayersScreen #layers-filter.-shown { display: block; }
    LayersScreen #layers-legend { height: auto; max-height: 2; padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort(1)", "Sort"),
        Binding("S", "sort(-1)", "Sort back", show=False),
        Binding("r", "reverse", "Reverse"),
        Binding("t", "tree", "Tree"),
        Binding("n", "jump_nonfinite", "NaN"),
        Binding("k", "cycle_rank", "Rank"),
    ]

    def __init__(
        self,
        model: LayersModel,
        on_focus: FocusCallback | None = None,
        ranks: RankedLayers | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.on_focus = on_focus
        self.ranks = ranks
        """Every rank's layers (a job); None: ``model`` alone."""
        self.rank = 0
        self._ranks_version = -1
        self._status: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="layers-status")
        yield Input(
            placeholder="filter by name or type (Enter/Esc: back to the table)", id="layers-filter"
        )
        yield LayerTable(self.model, id="layers-table")
        yield Static(legend_text(), id="layers-legend")
        yield Footer()

    @property
    def table(self) -> LayerTable:
        return self.query_one(LayerTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.sync()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_rank":
            return self.ranks is not None and len(self.ranks.ranks()) > 1
        return True

    def show_rank(self, rank: int) -> None:
        """Show another rank's layers (the same modules, that rank's statistics)."""
        if self.ranks is None:
            return
        self.rank = rank
        self.model = self.ranks.model(rank)
        tables = self.query(LayerTable)  # none yet when asked before the screen is composed
        if tables:
            tables.first().show_model(self.model)
        self._status = None

    def action_cycle_rank(self) -> None:
        if self.ranks is None:
            return
        ranks = self.ranks.ranks()
        later = [r for r in ranks if r > self.rank]
        self.show_rank(later[0] if later else ranks[0])
        self.sync()

    def sync(self) -> None:
        """Bring the table and the status line up to the model (once per frame)."""
        if self.ranks is not None:
            if self.ranks.version != self._ranks_version:
                self._ranks_version = self.ranks.version
                self.refresh_bindings()
            located = self.ranks.jump_to
            if located is not None and located[0] != self.rank:
                self.show_rank(located[0])
        table = self.table
        table.sync()
        jump = self.model.jump_to
        if jump is not None:
            self.model.jump_to = None
            if not table.select_layer(jump):
                self.query_one("#layers-filter", Input).value = ""
                table.set_filter("")
                table.select_layer(jump)
        many = self.ranks is not None and len(self.ranks.ranks()) > 1
        rank = (self.rank, len(self.ranks.ranks())) if many and self.ranks else None
        status = status_text(self.model, table, rank)
        if status != self._status:
            self._status = status
            self.query_one("#layers-status", Static).update(status)

    # --- actions ---------------------------------------------------------------------------

    def action_back(self) -> None:
        filter_input = self.query_one("#layers-filter", Input)
        if filter_input.has_focus:
            self.table.focus()
            return
        self.dismiss()

    def action_filter(self) -> None:
        filter_input = self.query_one("#layers-filter", Input)
        filter_input.add_class("-shown")
        filter_input.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)
        if not event.value:
            event.input.remove_class("-shown")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.table.focus()

    def action_sort(self, direction: int) -> None:
        keys = [key for key, _ in COLUMNS]
        table = self.table
        current = keys.index(table.sort_column) if table.sort_column in keys else 0
        nxt = keys[(current + direction) % len(keys)]
        table.sort_by(None if nxt == "name" else nxt, table.sort_reverse)
        self.sync()

    def action_reverse(self) -> None:
        table = self.table
        if table.sort_column is not None:
            table.sort_by(table.sort_column, not table.sort_reverse)
            self.sync()

    def action_tree(self) -> None:
        self.table.sort_by(None)
        self.sync()

    def action_jump_nonfinite(self) -> None:
        nf = self.model.nonfinite
        if nf is not None and nf.layer >= 0:
            self.model.jump_to = nf.layer
            self.sync()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is None:
            return
        self.open_detail(int(event.row_key.value))

    def open_detail(self, index: int) -> None:
        if self.on_focus is not None:
            self.on_focus(index)
        self.app.push_screen(LayerDetailScreen(self.model, index), self._detail_closed)

    def _detail_closed(self, _result: None) -> None:
        if self.on_focus is not None:
            self.on_focus(-1)


class LayerDetailScreen(Screen[None]):
    """Shapes, parameters, histograms and a statistic's history of one module."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("c", "cycle", "Chart stat"),
    ]

    def __init__(self, model: LayersModel, index: int) -> None:
        super().__init__()
        self.model = model
        self.index = index

    def compose(self) -> ComposeResult:
        yield LayerDetail(self.model, self.index, id="layer-detail")
        yield Footer()

    def sync(self) -> None:
        self.query_one(LayerDetail).sync()

    def action_back(self) -> None:
        self.dismiss()

    def action_cycle(self) -> None:
        self.query_one(LayerDetail).cycle_stat()
