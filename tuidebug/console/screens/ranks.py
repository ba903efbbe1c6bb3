"""The ranks screen (key R): per rank its state, step, speed, loss, GPU and a straggler mark.

One DataTable row per rank, written in place: each frame, only cells whose text changed are
updated, and a rank that appears gets a row added (the table is never rebuilt). A straggler is
a rank whose median step time is more than ``STRAGGLER_RATIO`` times the other live ranks'
median, or, in a job whose collectives keep every rank's step time even (DDP), whose own work
(its step time less backward, where the others wait for it) is; its row says by how much
("slow x1.8", "slow x1.8 (own work)"): ``ranks_state.RanksState.straggler``.
Enter shows the highlighted rank's loss on the dashboard's chart and header (and makes it
the rank `d` opens the debugger in); d there opens it in the highlighted rank; Escape goes back.
"""

from __future__ import annotations

import statistics
import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tuidebug.console.formatting import format_rate, format_value
from tuidebug.console.ranks_state import STRAGGLER_RATIO, RanksState, RankState

__all__ = ["COLUMNS", "RanksScreen", "rank_cells", "summary_text"]

COLUMNS = (
    ("rank", "rank"),
    ("state", "state"),
    ("step", "step"),
    ("rate", "steps/s"),
    ("time", "step time"),
    ("loss", "loss"),
    ("gpu", "GPU"),
    ("note", "straggler"),
)
TIME_REFRESH = 1.0  # seconds: "waiting 12s" counts up without a message

STATE_STYLES = {
    "running": "green",
    "paused": "bold black on yellow",
    "in debugger": "bold white on magenta",
    "held": "bold white on red",
    "finished": "blue",
    "starting": "yellow",
}


def format_seconds(seconds: float | None) -> str:
    """A step time: 850 µs, 12.3 ms, 1.25 s."""
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _state_style(text: str) -> str:
    if text.startswith("dead"):
        return "bold red"
    if text.startswith("waiting") or text in ("torn down", "stopped", "ended"):
        return "yellow"
    return STATE_STYLES.get(text, "")


def rank_cells(ranks: RanksState, state: RankState, now: float) -> dict[str, Text]:
    """The row of one rank, by column key."""
    status = ranks.state_of(state.rank, now)
    moving = status == "running"
    slow = ranks.straggler(state.rank)
    return {
        "rank": Text(str(state.rank), style="bold"),
        "state": Text(status, style=_state_style(status)),
        "step": Text(f"{state.step:,}" if state.steps_seen else "—", justify="right"),
        "rate": Text(format_rate(state.steps_per_second() if moving else None), justify="right"),
        "time": Text(format_seconds(state.median_step_time()), justify="right"),
        "loss": Text(format_value(state.last_loss), justify="right"),
        "gpu": Text(f"cuda:{state.gpu}" if state.gpu is not None else "—"),
        "note": Text(slow.label(), style="bold yellow") if slow else Text(""),
    }


def _widths_settled() -> None:
    """Nothing: the table's idle handler, run after this callback, measures the new cells."""


def summary_text(ranks: RanksState) -> Text:
    """One line over the table: ranks, how many live, the job's median step time, stragglers."""
    states = ranks.ordered()
    live = [s for s in states if s.alive]
    text = Text()
    text.append(f"{ranks.size} rank{'s' if ranks.size != 1 else ''}", style="bold")
    if len(live) != len(states):
        text.append(f" · {len(live)} live", style="bold red")
    medians = [m for s in live if (m := s.median_step_time()) is not None]
    if medians:
        text.append(f" · median step {format_seconds(statistics.median(medians))}")
    slow = [(s.rank, mark) for s in live if (mark := ranks.straggler(s.rank)) is not None]
    if slow:
        names = ", ".join(str(rank) for rank, _ in slow)
        text.append(f" · straggler{'s' if len(slow) > 1 else ''}: rank {names}", style="yellow")
        own = all(mark.basis == "own work" for _, mark in slow)
        measure = "its step time less backward" if own else "median step time"
        text.append(f" ({measure} > {STRAGGLER_RATIO:g}x the others')", style="bright_black")
    else:
        rule = f"median step time > {STRAGGLER_RATIO:g}x the others'"
        text.append(f" · stragglers: none ({rule})", style="bright_black")
    return text


class RanksScreen(Screen[None]):
    """Every rank of the job, one row each."""

    DEFAULT_CSS = """
    RanksScreen #ranks-summary { height: 1; padding: 0 1; }
    RanksScreen #ranks-table { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter", "show_rank", "Chart this rank"),
        Binding("d", "debug_rank", "Debugger in this rank"),
    ]

    def __init__(self, ranks: RanksState) -> None:
        super().__init__()
        self.ranks = ranks
        self._cells: dict[int, dict[str, Text]] = {}
        self._version = -1
        self._refreshed = 0.0
        self._summary: Text | None = None
        self._table: DataTable[Text] | None = None  # the table the cells were written into

    def compose(self) -> ComposeResult:
        yield Static(id="ranks-summary")
        yield DataTable(id="ranks-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#ranks-table", DataTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.sync()

    def _fresh_table(self) -> DataTable[Text] | None:
        """The table to write into, set up when it is a new one (None: not composed yet).

        The app keeps this screen and pushes it again after a dismiss, which composes a new,
        empty table. The app's frame timer can call ``sync`` before this screen's ``on_mount``
        (seen live: updating a cell of a row the new table lacked crashed the console), so the
        table itself says whether what was written is still on screen."""
        tables = self.query("#ranks-table").results(DataTable)
        table = next(tables, None)
        if table is None:
            return None
        if table is not self._table:
            self._table = table
            self._cells = {}
            self._version = -1
            self._summary = None
            for key, label in COLUMNS:
                table.add_column(label, key=key)
        return table

    def sync(self, now: float | None = None) -> None:
        """Write the cells that changed (once per frame; at least once a second for timers)."""
        now = time.time() if now is None else now
        table = self._fresh_table()
        if table is None:
            return
        ranks = self.ranks
        if ranks.version == self._version and now - self._refreshed < TIME_REFRESH:
            return
        self._version, self._refreshed = ranks.version, now
        updated = False
        for state in ranks.ordered():
            cells = rank_cells(ranks, state, now)
            shown = self._cells.get(state.rank)
            if shown is None:
                table.add_row(*(cells[key] for key, _ in COLUMNS), key=str(state.rank))
            else:
                for key, _ in COLUMNS:
                    if cells[key] != shown[key]:
                        table.update_cell(str(state.rank), key, cells[key], update_width=True)
                        updated = True
            self._cells[state.rank] = cells
        if updated:
            # The table widens a column for a longer cell only when its own message queue
            # next runs dry; with no message for it (a paused job) "in debugger" stayed cut
            # to "in deb" in paused's width. A callback is such a message.
            table.call_later(_widths_settled)
        summary = summary_text(ranks)
        if summary != self._summary:
            self._summary = summary
            self.query_one("#ranks-summary", Static).update(summary)

    def selected_rank(self) -> int | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value) if key.value is not None else None

    def action_show_rank(self) -> None:
        rank = self.selected_rank()
        if rank is None:
            return
        self.ranks.shown = rank
        self.ranks.version += 1
        self.notify(f"the loss chart and header show rank {rank} (k cycles)")
        self.dismiss()

    async def action_debug_rank(self) -> None:
        """Choose the highlighted rank (as Enter does) and open the debugger in it (app's d)."""
        rank = self.selected_rank()
        if rank is not None:
            self.ranks.shown = rank
            self.ranks.version += 1
        await self.app.run_action("debug")

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_show_rank()

    def action_back(self) -> None:
        self.dismiss()
