"""The hyperparameters screen (key h): every param group's lr, weight_decay, momentum and
betas, the script's own tunables (``dbg.tunable``), and the changes made so far.

Keys: Enter on a value asks for a new one (that group only); ``*`` asks for a new value of the
highlighted column for every group of that optimizer; Enter on a tunable asks for its value;
Tab moves between the tables; Escape goes back. A change is applied at the run's next step
boundary; the answer (the change, or why it was refused) comes back as a notice, a line here
and a marker on the loss chart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tuidebug.console.extensions import SendCommand
from tuidebug.console.hparams_state import HparamsState
from tuidebug.console.screens.prompt import PromptScreen
from tuidebug.wire.hparam_messages import (
    HPARAM_NAMES,
    HPARAMS_SCAN,
    SET_HPARAM,
    SET_TUNABLE,
    HparamGroup,
    TunableInfo,
)
from tuidebug.wire.messages import Command

GROUP_COLUMNS = ("optimizer", "group", *HPARAM_NAMES, "schedulers")
FIRST_VALUE = 2  # GROUP_COLUMNS[2:6] are the settable values
EVENT_LINES = 8
HINTS = {
    "lr": "a number >= 0; an attached LR scheduler is rescaled so its schedule goes on from it",
    "weight_decay": "a number >= 0",
    "momentum": "a number in [0, 1)",
    "betas": "two numbers in [0, 1): 0.9,0.999",
}


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def group_value(group: HparamGroup, name: str) -> str | None:
    """A group's value as the prompt shows it (``repr``: it reads back exactly), or None."""
    value: object = getattr(group, name)
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(repr(v) for v in value)
    return repr(value)


class HparamsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter", "edit", "Set value", show=True),
        Binding("asterisk", "edit_all", "Set for every group"),
    ]
    DEFAULT_CSS = """
    HparamsScreen #hparams-groups { height: auto; max-height: 50%; }
    HparamsScreen #hparams-tunables { height: auto; max-height: 30%; }
    HparamsScreen .title { padding: 0 1; text-style: bold; }
    HparamsScreen #hparams-events { height: auto; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, state: HparamsState, send: SendCommand) -> None:
        super().__init__()
        self.state = state
        self._send = send
        self._shown = -1
        self._groups: list[tuple[str, str, HparamGroup]] = []  # (optimizer, class, group)
        self._tunables: list[TunableInfo] = []
        self._prompting = False

    def compose(self) -> ComposeResult:
        yield Static(
            "Optimizers: Enter sets a value at the next step, * for every group", classes="title"
        )
        yield DataTable(id="hparams-groups", cursor_type="cell", zebra_stripes=True)
        yield Static("Tunables (dbg.tunable in the script)", classes="title")
        yield DataTable(id="hparams-tunables", cursor_type="row", zebra_stripes=True)
        yield Static(id="hparams-events")
        yield Footer()

    def on_mount(self) -> None:
        groups = self.query_one("#hparams-groups", DataTable)
        groups.add_columns(*GROUP_COLUMNS)
        tunables = self.query_one("#hparams-tunables", DataTable)
        tunables.add_columns("name", "value", "default", "type")
        self.sync()
        groups.focus()

    def sync(self) -> None:
        if self.state.version == self._shown:
            return
        self._shown = self.state.version
        table = self.state.table
        groups = self.query_one("#hparams-groups", DataTable)
        cursor = groups.cursor_coordinate
        groups.clear()
        self._groups = []
        known = table is not None and table.schedulers_known
        for optimizer in table.optimizers if table is not None else []:
            for group in optimizer.groups:
                self._groups.append((optimizer.name, optimizer.class_name, group))
                betas = "—" if group.betas is None else ",".join(f"{b:g}" for b in group.betas)
                groups.add_row(
                    f"{optimizer.name} ({optimizer.class_name})",
                    str(group.index),
                    _number(group.lr),
                    _number(group.weight_decay),
                    _number(group.momentum),
                    betas,
                    ", ".join(optimizer.schedulers) or ("—" if known else "?"),
                )
        if self._groups:
            groups.cursor_coordinate = Coordinate(
                min(cursor.row, len(self._groups) - 1), max(cursor.column, FIRST_VALUE)
            )
        tunables = self.query_one("#hparams-tunables", DataTable)
        row = tunables.cursor_row
        tunables.clear()
        self._tunables = list(table.tunables) if table is not None else []
        for info in self._tunables:
            tunables.add_row(info.name, info.value, info.default, info.kind)
        if self._tunables:
            tunables.move_cursor(row=min(max(row, 0), len(self._tunables) - 1))
        self.query_one("#hparams-events", Static).update(self._events_text())

    def _events_text(self) -> Text:
        if self.state.table is None:
            return Text("no optimizer seen yet")
        text = Text("Changes:\n" if self.state.events else "No change made yet.")
        for event in self.state.events[-EVENT_LINES:]:
            warn = "warning" in event.scheduler
            text.append(event.text + "\n", style="yellow" if warn else "")
        return text

    def on_screen_resume(self) -> None:
        # The probe looks for LR schedulers only when asked (a scan of its heap): now, since
        # someone is about to change a value they may rescale or overwrite. Not when coming
        # back from this screen's own prompt (the change itself rescans).
        if self._prompting:
            self._prompting = False
            return
        self._send(Command(name=HPARAMS_SCAN, rank=-1))

    def _prompt(self, prompt: PromptScreen, answer: Callable[[str | None], None]) -> None:
        self._prompting = True
        self.app.push_screen(prompt, answer)

    # --- actions ----------------------------------------------------------------------------

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        if event.data_table.id == "hparams-groups":
            self._edit_group(every=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "hparams-tunables":
            self._edit_tunable()

    def action_edit(self) -> None:
        if self.focused is self.query_one("#hparams-tunables", DataTable):
            self._edit_tunable()
        else:
            self._edit_group(every=False)

    def action_edit_all(self) -> None:
        self._edit_group(every=True)

    def _edit_group(self, every: bool) -> None:
        table = self.query_one("#hparams-groups", DataTable)
        row, column = table.cursor_coordinate
        if not self._groups or not 0 <= row < len(self._groups):
            self.notify("no optimizer seen yet", severity="warning")
            return
        if not FIRST_VALUE <= column < FIRST_VALUE + len(HPARAM_NAMES):
            self.notify("move to lr, weight_decay, momentum or betas (← →)")
            return
        name = HPARAM_NAMES[column - FIRST_VALUE]
        optimizer, class_name, group = self._groups[row]
        current = group_value(group, name)
        if current is None:
            self.notify(f"{class_name} group {group.index} has no {name}", severity="warning")
            return
        where = "every group" if every else f"group {group.index}"

        def answer(value: str | None) -> None:
            if value:
                args = {"name": name, "value": value, "optimizer": optimizer}
                args["group"] = "" if every else str(group.index)
                self._send(Command(name=SET_HPARAM, args=args, rank=-1))

        question = f"{name} of {optimizer} ({class_name}), {where}"
        hint = f"{HINTS[name]}; applied at the next step boundary"
        self._prompt(PromptScreen(question, hint, value=current), answer)

    def _edit_tunable(self) -> None:
        table = self.query_one("#hparams-tunables", DataTable)
        row = table.cursor_row
        if not self._tunables or not 0 <= row < len(self._tunables):
            self.notify('the script declared no tunable (dbg.tunable("name", default))')
            return
        info = self._tunables[row]
        if info.kind == "other":
            self.notify(
                f"{info.name}: only a float, int, bool or str can be set", severity="warning"
            )
            return

        def answer(value: str | None) -> None:
            if value is not None and (value or info.kind == "str"):
                args = {"name": info.name, "value": value}
                self._send(Command(name=SET_TUNABLE, args=args, rank=-1))

        hint = f"a {info.kind} (default {info.default}); the script reads it from its next step"
        self._prompt(PromptScreen(f"{info.name}", hint, value=info.value), answer)

    def action_back(self) -> None:
        self.dismiss()
