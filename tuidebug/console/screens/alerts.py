"""The alerts screen (key a): every training-bug alert, its why and its fix.

Keys: Enter jumps to the alert's layer (opens the layers screen) or says which step it is
about; ``i`` silences the alert's rule for this run (the probe stops checking it); ``f`` starts
a learning-rate range test on the live run (its state is restored after it); Escape goes back.
In a job whose alerts come from several ranks, ``k`` cycles which show: every rank's, then
rank 0's, 1's, ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tuidebug.console.checks_state import ChecksState
from tuidebug.wire.check_messages import Alert

STYLES = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def lr_plot_text(state: ChecksState) -> str:
    """The last LR range test as text (or "")."""
    result = state.lr_find
    if result is None:
        return ""
    from tuidebug.checks.cli import plot_text

    lines = plot_text(result.lrs, result.losses, width=50, height=8)
    suggested = f"{result.suggested:.2e}" if result.suggested is not None else "none"
    restored = "state restored" if result.restored else "state NOT restored"
    return "\n".join([f"LR range test: suggested {suggested} ({restored}) {result.note}", *lines])


class AlertsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter", "jump", "Go to layer/step", show=True),
        Binding("i", "silence", "Silence rule"),
        Binding("f", "lr_find", "LR finder"),
        Binding("k", "cycle_rank", "Rank"),
    ]
    DEFAULT_CSS = """
    AlertsScreen #alerts-table { height: 1fr; }
    AlertsScreen #alert-detail { height: auto; max-height: 12; padding: 0 1; }
    AlertsScreen #alerts-extra { height: auto; padding: 0 1; color: $text-muted; }
    """

    def __init__(
        self,
        state: ChecksState,
        on_silence: Callable[[str], None],
        on_lr_find: Callable[[], None],
    ) -> None:
        super().__init__()
        self.state = state
        self._on_silence = on_silence
        self._on_lr_find = on_lr_find
        self._shown_version = -1
        self._rows: list[Alert] = []
        self.rank: int | None = None
        """The rank whose alerts show (None: every rank's)."""
        self._many = False  # alerts of more than one rank arrived

    def compose(self) -> ComposeResult:
        yield DataTable(id="alerts-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="alert-detail")
        yield Static(id="alerts-extra")
        yield Footer()

    def on_mount(self) -> None:
        # The app pushes this screen again after a dismiss, with a new (empty) table: fill it.
        self._shown_version = -1
        table = self.query_one(DataTable)
        table.add_columns("sev", "rule", "step", "place", "message")
        self.sync()

    def sync(self) -> None:
        if self.state.version == self._shown_version:
            return
        self._shown_version = self.state.version
        many = len(self.state.ranks()) > 1
        if many != self._many:
            self._many = many
            self.refresh_bindings()
        table = self.query_one(DataTable)
        rows = self.state.visible(self.rank)
        cursor = table.cursor_row
        table.clear()
        for alert in rows:
            table.add_row(
                Text(alert.severity, style=STYLES.get(alert.severity, "")),
                alert.rule,
                str(alert.step),
                alert.place,
                alert.message,
            )
        self._rows = rows
        if rows:
            table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
        else:
            self.query_one("#alert-detail", Static).update("No alerts: every rule is quiet so far.")
        extra = []
        if self._many:
            shown = "every rank" if self.rank is None else f"rank {self.rank}"
            extra.append(f"showing the alerts of {shown} (k)")
        if self.state.overfit is not None:
            o = self.state.overfit
            verdict = "reached" if o.reached else "NOT reached"
            extra.append(
                f"overfit one batch: {o.first_loss:.4g} -> {o.last_loss:.4g} in {o.steps} steps "
                f"({verdict})"
            )
        if self.state.silenced:
            extra.append("silenced: " + ", ".join(sorted(self.state.silenced)))
        plot = lr_plot_text(self.state)
        if plot:
            extra.append(plot)
        self.query_one("#alerts-extra", Static).update(Text("\n".join(extra)))
        self._show_detail()

    def selected(self) -> Alert | None:
        table = self.query_one(DataTable)
        if not self._rows or table.cursor_row < 0 or table.cursor_row >= len(self._rows):
            return None
        return self._rows[table.cursor_row]

    def _show_detail(self) -> None:
        alert = self.selected()
        if alert is None:
            return
        text = Text()
        text.append(f"{alert.rule}", style="bold")
        text.append(f"  {alert.severity} · step {alert.step} · rank {alert.rank}\n")
        text.append(alert.message + "\n")
        if alert.evidence:
            text.append(f"evidence: {alert.evidence}\n", style="bright_black")
        text.append("why: ", style="bold")
        text.append(alert.why + "\n")
        text.append("fix: ", style="bold green")
        text.append(alert.fix)
        self.query_one("#alert-detail", Static).update(text)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_jump()

    def action_jump(self) -> None:
        alert = self.selected()
        if alert is None:
            return
        if alert.layer:
            self.notify(f"{alert.rule}: layer {alert.layer} (step {alert.step})")
            open_extension = getattr(self.app, "action_open_extension", None)
            if open_extension is not None:
                with contextlib.suppress(StopIteration):  # no layers extension here
                    open_extension("layers")
                # The layers of the rank the alert is about (a job's rules run on every rank).
                show_rank = getattr(self.app.screen, "show_rank", None)
                if show_rank is not None:
                    show_rank(alert.rank)
            return
        self.notify(f"{alert.rule}: step {alert.step} on the loss chart")

    def action_silence(self) -> None:
        alert = self.selected()
        if alert is None:
            return
        self.state.silence(alert.rule)
        self._on_silence(alert.rule)
        self.notify(f"{alert.rule} silenced for this run")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_rank":
            return self._many
        return True

    def action_cycle_rank(self) -> None:
        """Every rank's alerts, then rank 0's, 1's, ..., then every rank's again."""
        choices: list[int | None] = [None, *self.state.ranks()]
        at = choices.index(self.rank) if self.rank in choices else 0
        self.rank = choices[(at + 1) % len(choices)]
        self._shown_version = -1
        self.sync()

    def action_lr_find(self) -> None:
        self._on_lr_find()
        self.notify("LR range test requested: it runs over the next steps, then restores state")

    def action_back(self) -> None:
        self.dismiss()
