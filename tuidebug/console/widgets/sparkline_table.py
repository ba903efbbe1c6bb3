"""A table of the run's other scalars: name, last, min, max and a tiny trend sparkline.

Rows are keyed by scalar name and updated in place (``DataTable.add_row`` costs ~0.2 ms a row;
``update_cell`` does not rebuild the table), so the owner can call :meth:`update_scalars` once
per frame with every scalar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.text import Text
from textual.widgets import DataTable

from tuidebug.console.history import MinMaxHistory
from tuidebug.console.widgets.loss_chart import format_number

__all__ = ["ScalarsTable", "sparkline_text"]

_BARS = "▁▂▃▄▅▆▇█"


def sparkline_text(history: MinMaxHistory, width: int, style: str = "cyan") -> Text:
    """One line of block bars over the whole history, one per cell, from the column max.

    The max (not the mean) so that a spike in a scalar such as the gradient norm shows; NaN
    columns are a red ``!``.
    """
    cols = history.downsample(width)
    nonfinite = history.nonfinite_columns(width)
    finite = history.finite_range()
    text = Text()
    if finite is None:
        text.append("!" * sum(1 for n in nonfinite if n), style="bold red")
        return text
    lo, hi = finite
    span = hi - lo
    for col, bad in zip(cols, nonfinite, strict=True):
        if bad:
            text.append("!", style="bold red")
        elif col is None:
            text.append(" ")
        else:
            level = int((col.max - lo) / span * (len(_BARS) - 1) + 0.5) if span > 0 else 3
            text.append(_BARS[level], style=style)
    return text


class ScalarsTable(DataTable[Text]):
    """Name, last, min, max and a trend per scalar; rows update in place."""

    DEFAULT_CSS = """
    ScalarsTable {
        height: auto;
        max-height: 12;
    }
    """

    COLUMNS = ("name", "last", "min", "max", "trend")
    NAME_WIDTH = 10
    """Cells of a fixed width: numbers from ``format_number`` fit in 8; longer names are cut.
    Fixed widths also keep rows drawn before the table's first idle measurement (DataTable
    measures auto widths then, and keeps such rows' rendering) from showing narrower columns
    than the rows drawn after it."""
    NUMBER_WIDTH = 8

    def __init__(
        self,
        *,
        spark_width: int = 16,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.spark_width = spark_width
        # Last drawn version per name, so an unchanged scalar costs nothing.
        self._versions: dict[str, int] = {}

    def on_mount(self) -> None:
        widths = (self.NAME_WIDTH, self.NUMBER_WIDTH, self.NUMBER_WIDTH, self.NUMBER_WIDTH)
        for column, width in zip(self.COLUMNS, (*widths, self.spark_width), strict=True):
            self.add_column(column, key=column, width=width)

    def _cells(self, name: str, history: MinMaxHistory) -> tuple[Text, ...]:
        last = history.last_value
        finite = history.finite_range()
        lo, hi = finite if finite is not None else (math.nan, math.nan)
        last_text = Text(format_number(last), style="bold red" if not math.isfinite(last) else "")
        return (
            Text(name),
            last_text,
            Text(format_number(lo)),
            Text(format_number(hi)),
            sparkline_text(history, self.spark_width),
        )

    def update_scalars(
        self, histories: Mapping[str, MinMaxHistory], versions: Mapping[str, int] | None = None
    ) -> None:
        """Add rows for new names and update the others in place.

        Args:
            histories: Scalar name to its history.
            versions: Optional per-name version counters; a row whose version did not change
                since the last call is skipped.
        """
        for name, history in histories.items():
            version = versions.get(name) if versions is not None else None
            if version is not None and self._versions.get(name) == version:
                continue
            cells = self._cells(name, history)
            if name in self.rows:
                for column, cell in zip(self.COLUMNS[1:], cells[1:], strict=True):
                    self.update_cell(name, column, cell)
            else:
                self.add_row(*cells, key=name)
            if version is not None:
                self._versions[name] = version
