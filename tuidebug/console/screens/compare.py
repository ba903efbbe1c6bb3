"""The picker of the run to compare with (the dashboard's ``v``): past runs, as ``tuidebug ls``
lists them, and a row to clear the comparison."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from tuidebug.runs import RunSummary

CLEAR = ""  # the result that clears the comparison (None: cancelled)
COMMAND_WIDTH = 40  # a longer command is cut (script file name, then its arguments)


class CompareScreen(ModalScreen[str | None]):
    """Choose a run whose loss curve the chart overlays; Enter chooses, Escape cancels.

    Args:
        runs: The runs to offer, newest first (the live run itself left out by the caller).
        current: The id of the run compared with now, if any: a first row clears it.
    """

    DEFAULT_CSS = """
    CompareScreen {
        align: center middle;
    }
    CompareScreen > Vertical {
        width: 110;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    CompareScreen DataTable {
        height: auto;
        max-height: 20;
    }
    CompareScreen .hint {
        color: $text-muted;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, runs: list[RunSummary], current: str | None = None) -> None:
        super().__init__()
        self.runs = runs
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Compare the loss with another run[/b]")
            if not self.runs and self.current is None:
                yield Static("No other run yet: `tuidebug ls` lists them.", classes="hint")
                return
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("run", "state", "steps", "loss", "age", "command")
            if self.current is not None:
                table.add_row(
                    "—", "", "", "", "", f"no comparison (now: {self.current})", key=CLEAR
                )
            for run in self.runs:
                table.add_row(
                    run.run_id,
                    run.state_text,
                    run.steps_text,
                    run.loss_text,
                    run.age(),
                    run.command_fit(COMMAND_WIDTH),
                    key=run.run_id,
                )
            yield table
            yield Static("enter: compare · escape: cancel", classes="hint")

    def on_mount(self) -> None:
        if self.query(DataTable):
            self.query_one(DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(event.row_key.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
