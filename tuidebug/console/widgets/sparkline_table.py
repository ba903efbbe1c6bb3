"""A table of the run's other scalars: name, last, min, max and a tiny trend sparkline.

Rows are keyed by scalar name and updated in place (``DataTable.add_row`` costs ~0.2 ms a row;
``update_cell`` does not rebuild the table), so the owner can call :meth:`update_scalars` once
per frame with every scalar. The columns fit the table's width (:func:`plan_columns`): the
table is rebuilt only when a resize changes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.text import Text
from textual.widgets import DataTable

from tuidebug.console.history import MinMaxHistory
from tuidebug.console.widgets.loss_chart import format_number

__all__ = ["ScalarsTable", "plan_columns", "sparkline_text"]

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


NAME_WIDTH = 11
"""Cells for a name: ten characters and a gap (longer names are cut)."""
NUMBER_WIDTH = 9
"""Cells for a number: ``format_number`` writes at most eight, and a gap."""
MIN_TREND = 3


def plan_columns(width: int, max_trend: int) -> tuple[tuple[str, int], ...]:
    """The columns that fit ``width`` cells, as (key, width): name and last always; min and
    max when they leave the trend at least six cells; the trend in what is left (at most
    ``max_trend``, none under three). Fixed widths, no padding: nothing ever scrolls sideways.
    (Fixed, not auto, widths also matter to Textual 8: a DataTable measures auto widths when
    idle and keeps the rendering of rows drawn before that, narrower than the later ones.)
    """
    columns = [("name", NAME_WIDTH), ("last", NUMBER_WIDTH)]
    left = width - NAME_WIDTH - NUMBER_WIDTH
    if left >= 2 * NUMBER_WIDTH + 6:
        columns += [("min", NUMBER_WIDTH), ("max", NUMBER_WIDTH)]
        left -= 2 * NUMBER_WIDTH
    trend = min(left, max_trend)
    if trend >= MIN_TREND:
        columns.append(("trend", trend))
    return tuple(columns)


class ScalarsTable(DataTable[Text]):
    """Name, last, min, max and a trend per scalar; rows update in place.

    Hidden while there is no scalar (a run that reports only its loss), so that the panel
    does not show an empty header.
    """

    DEFAULT_CSS = """
    ScalarsTable {
        height: auto;
        max-height: 12;
        padding: 0 0 0 1;
        overflow-x: hidden;
    }
    """

    def __init__(
        self,
        *,
        spark_width: int = 16,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            name=name,
            id=id,
            classes=classes,
            cursor_type="row",
            zebra_stripes=True,
            cell_padding=0,
        )
        self.spark_width = spark_width
        """The widest the trend column gets."""
        self._plan: tuple[tuple[str, int], ...] = ()
        # What the rows show, so that a new set of columns can be filled again at once.
        self._histories: dict[str, MinMaxHistory] = {}
        # Last drawn version per name, so an unchanged scalar costs nothing.
        self._versions: dict[str, int] = {}

    def on_mount(self) -> None:
        self.display = False
        self._apply_plan(plan_columns(0, self.spark_width))

    def on_resize(self) -> None:
        plan = plan_columns(self.scrollable_content_region.width, self.spark_width)
        if plan != self._plan:
            self._apply_plan(plan)

    def _apply_plan(self, plan: tuple[tuple[str, int], ...]) -> None:
        """Rebuild the columns (a resize that changes them: rare) and refill every row."""
        self._plan = plan
        self.clear(columns=True)
        for key, width in plan:
            label = key if len(key) <= width else ""  # a narrow trend: bars, no cut label
            self.add_column(label, key=key, width=width)
        for name, history in self._histories.items():
            self.add_row(*self._cells(name, history), key=name)

    def _cells(self, name: str, history: MinMaxHistory) -> tuple[Text, ...]:
        cells: list[Text] = []
        for key, width in self._plan:
            if key == "name":
                cells.append(Text(name[: width - 1]))
            elif key == "last":
                last = history.last_value
                style = "bold red" if not math.isfinite(last) else ""
                cells.append(Text(format_number(last), style=style))
            elif key == "trend":
                cells.append(sparkline_text(history, width))
            else:
                finite = history.finite_range()
                lo, hi = finite if finite is not None else (math.nan, math.nan)
                cells.append(Text(format_number(lo if key == "min" else hi)))
        return tuple(cells)

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
            self._histories[name] = history
            cells = self._cells(name, history)
            if name in self.rows:
                for (key, _), cell in zip(self._plan[1:], cells[1:], strict=True):
                    self.update_cell(name, key, cell)
            else:
                self.add_row(*cells, key=name)
            if version is not None:
                self._versions[name] = version
        if self.row_count and not self.display:
            self.display = True
