"""The table of modules: tree-indented, sortable, filterable, updated in place.

One row per module (keyed by its layer index). Rows are added only when a model's module tree
arrives or the filter changes; statistics update cells in place (``DataTable.update_cell``),
and only for rows the model reports as changed. A sample of a 1,000-module model changes every
row at once, so each frame updates the visible rows first and at most ``ROWS_PER_FRAME`` others:
the screen stays responsive and the rest catch up within a few frames.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, ColumnKey, RowKey

from tuidebug.console.layers_model import LayerRow, LayersModel
from tuidebug.console.widgets.loss_chart import format_number
from tuidebug.units import fmt_bytes

__all__ = ["ANOMALY_STYLES", "COLUMNS", "LayerTable", "SortCell"]

ROWS_PER_FRAME = 120
RESORT_EVERY = 1.0  # seconds: a sorted table follows new values at most this often

COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "module"),
    ("type", "type"),
    ("params", "params"),
    ("shape", "out shape"),
    ("dtype", "dtype"),
    ("device", "dev"),
    ("act_bytes", "act mem"),
    ("mean", "mean"),
    ("std", "std"),
    ("min", "min"),
    ("max", "max"),
    ("zeros", "zeros"),
    ("nonfinite", "nan/inf"),
    ("grad_norm", "grad‖"),
    ("weight_norm", "w‖"),
    ("update_ratio", "Δw/w"),
)
"""(key, header) of each column, in order."""

ANOMALY_STYLES = {
    "nonfinite": "bold red",
    "exploding": "yellow",
    "update": "magenta",
    "dead": "blue",
    "vanishing": "blue",
    "shape": "cyan",
}
"""Anomaly kind -> the colour of the cells it concerns (the legend shows the same)."""

_CELL_ANOMALY = {
    "nonfinite": ("nonfinite", "mean", "std", "min", "max", "grad_norm", "weight_norm"),
    "exploding": ("min", "max", "grad_norm"),
    "update": ("update_ratio",),
    "dead": ("zeros",),
    "vanishing": ("grad_norm",),
    "shape": ("shape",),
}


class SortCell(Text):
    """A table cell that carries the value it sorts by (the text is only how it looks)."""

    def __init__(self, text: str, sort_value: Any, style: str = "") -> None:
        super().__init__(text, style=style, no_wrap=True)
        self.sort_value = sort_value


def _num(value: float, missing: bool = False) -> SortCell:
    if missing:
        return SortCell("—", None)
    return SortCell(format_number(value), value)


def row_cells(row: LayerRow) -> dict[str, SortCell]:
    """The cells of one module, keyed by column, coloured by its anomalies."""
    act = row.act
    indent = "  " * min(row.depth, 12)
    cells: dict[str, SortCell] = {
        "name": SortCell(f"{indent}{row.label}", row.index),
        "type": SortCell(row.type, row.type),
        "params": SortCell(f"{row.params:,}" if row.params else "", row.params),
        "shape": SortCell(row.out_shape + ("*" if row.shape_changed else ""), row.out_shape),
        "dtype": SortCell(row.dtype, row.dtype),
        "device": SortCell(row.device, row.device),
        "act_bytes": SortCell(fmt_bytes(row.act_bytes) if row.act_bytes else "", row.act_bytes),
    }
    for k, key in enumerate(("mean", "std", "min", "max")):
        cells[key] = _num(act[k], act is None) if act is not None else _num(0.0, True)
    if act is not None:
        cells["zeros"] = SortCell(f"{act[4]:.0%}" if act[4] == act[4] else "—", act[4])
        bad = int(act[5])  # -1: some, not counted (see ACT_FIELDS)
        cells["nonfinite"] = SortCell("≥1" if bad < 0 else str(bad), math.inf if bad < 0 else bad)
    else:
        cells["zeros"] = _num(0.0, True)
        cells["nonfinite"] = _num(0.0, True)
    for key in ("grad_norm", "weight_norm", "update_ratio"):
        value = float(getattr(row, key))
        cells[key] = _num(value, value == -1.0)
    anomalies = row.anomalies()
    for kind in anomalies:
        style = ANOMALY_STYLES[kind]
        for key in _CELL_ANOMALY[kind]:
            cells[key].stylize(style)
    if anomalies:
        cells["name"].stylize(ANOMALY_STYLES[anomalies[0]])
    return cells


def _sort_key(value: Any) -> tuple[int, Any]:
    # Unknown values sort last; NaN just before them (it matters, but is not a number).
    if not isinstance(value, SortCell) or value.sort_value is None:
        return (2, 0)
    v = value.sort_value
    if isinstance(v, float) and math.isnan(v):
        return (1, 0)
    return (0, v)


class LayerTable(DataTable[Text]):
    """Modules as a tree-indented table. Feed it with :meth:`sync` once per frame."""

    DEFAULT_CSS = """
    LayerTable {
        height: 1fr;
    }
    """

    def __init__(
        self,
        model: LayersModel,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.model = model
        self.filter_text = ""
        self.sort_column: str | None = None
        """The column the rows are sorted by; None: tree order."""
        self.sort_reverse = False
        self._structure = -1
        self._pending: set[int] = set()
        self._last_sort = 0.0
        self._sort_dirty = False
        self.row_updates = 0
        """Rows updated in place so far (tests and benchmarks read it)."""

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    # --- feeding -------------------------------------------------------------------------------

    def sync(self) -> None:
        """Bring the rows up to the model: new rows on a new tree, changed cells otherwise."""
        model = self.model
        if model.structure_version != self._structure:
            self._structure = model.structure_version
            model.take_changed()
            self.rebuild()
            return
        self._pending |= model.take_changed()
        if self._pending:
            self._update_some()
        if (
            self.sort_column is not None
            and self._sort_dirty
            and not self._pending
            and time.monotonic() - self._last_sort > RESORT_EVERY
        ):
            self._apply_sort()

    def show_model(self, model: LayersModel) -> None:
        """Show another model (another rank's): every row again on the next sync."""
        if model is not self.model:
            self.model = model
            self._structure = -1
            self._pending.clear()

    def matches(self, row: LayerRow) -> bool:
        text = self.filter_text
        return not text or text in row.name.lower() or text in row.type.lower()

    def rebuild(self) -> None:
        """All rows again (a new tree or a new filter): the only full rebuild."""
        selected = self.selected_layer()
        self.clear()
        self._pending.clear()
        for row in self.model.rows:
            if self.matches(row):
                cells = row_cells(row)
                self.add_row(*(cells[key] for key, _ in COLUMNS), key=str(row.index))
        if self.sort_column is not None:
            self._apply_sort()
        if selected is not None:
            self.select_layer(selected)

    def _update_some(self) -> None:
        visible = self._visible_layers()
        first = [i for i in visible if i in self._pending]
        rest = [i for i in self._pending if i not in visible]
        written = 0
        for index in first + rest[: max(0, ROWS_PER_FRAME - len(first))]:
            self._pending.discard(index)
            written += self._update_row(index)
        if written:
            # Cells written straight into the table's data (see _update_row): one cache
            # invalidation and one refresh for the whole batch.
            self._update_count += 1
            self.refresh()

    def _visible_layers(self) -> set[int]:
        start = int(self.scroll_y)
        rows = self.ordered_rows[start : start + max(1, self.size.height) + 1]
        return {int(r.key.value) for r in rows if r.key.value is not None}

    def _update_row(self, index: int) -> int:
        """Write one row's cells; 1 when written without a refresh (the caller refreshes)."""
        row = self.model.row(index)
        key = RowKey(str(index))
        if row is None or key not in self.rows:
            return 0
        cells = row_cells(row)
        self.row_updates += 1
        self._sort_dirty = True
        data = getattr(self, "_data", {}).get(key)
        if isinstance(data, dict) and all(ColumnKey(c) in data for c, _ in COLUMNS):
            # DataTable.update_cell refreshes the widget once per cell (~60 µs each, 15 a
            # row): on a 1,000-module model that made a frame take over 100 ms. Same effect,
            # one refresh per frame (textual 6-8 keep cells in ``_data``). A cell wider than
            # its column (the tree came before any statistics: the columns were sized on
            # "—") is handed to the table to measure when idle, as update_cell(...,
            # update_width=True) does; columns only grow here.
            widths = getattr(self, "_updated_cells", None)
            for column, _ in COLUMNS:
                column_key = ColumnKey(column)
                cell = cells[column]
                data[column_key] = cell
                if widths is not None and cell.cell_len > self.columns[column_key].content_width:
                    widths.add(CellKey(key, column_key))
                    self._require_update_dimensions = True
            return 1
        for column, _ in COLUMNS:
            self.update_cell(key, column, cells[column])
        return 0

    # --- sorting, filtering, selection -----------------------------------------------------------

    def set_filter(self, text: str) -> None:
        text = text.strip().lower()
        if text != self.filter_text:
            self.filter_text = text
            self.rebuild()

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        """Sort by a column key (``COLUMNS``); None: back to tree order."""
        self.sort_column = column
        self.sort_reverse = reverse
        for index in list(self._pending):  # sort on fresh values
            self._update_row(index)
        self._pending.clear()
        self._apply_sort()

    def _apply_sort(self) -> None:
        selected = self.selected_layer()
        column = self.sort_column or "name"
        reverse = self.sort_reverse if self.sort_column is not None else False
        key: Callable[[Any], Any]
        if reverse:
            # Unknown and NaN stay last when reversed too.
            def key(v: Any) -> Any:
                rank, value = _sort_key(v)
                return (rank, _Reversed(value))
        else:
            key = _sort_key
        self.sort(column, key=key)
        self._last_sort = time.monotonic()
        self._sort_dirty = False
        if selected is not None:
            self.select_layer(selected)

    def selected_layer(self) -> int | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def select_layer(self, index: int) -> bool:
        """Move the cursor to a module's row (False when it is filtered out)."""
        key = str(index)
        if key not in self.rows:
            return False
        self.move_cursor(row=self.get_row_index(key))
        return True


class _Reversed:
    """Inverts the order of a value inside a sort key."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(self.value > other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]
