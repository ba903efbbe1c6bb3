"""Asking what quitting means for the run: stop it, or leave it running."""

from __future__ import annotations

from typing import ClassVar, Literal

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

QuitChoice = Literal["stop", "leave", "cancel"]


class QuitScreen(ModalScreen[QuitChoice]):
    """Quit the console: stop the run, leave it running (re-attach later), or stay."""

    DEFAULT_CSS = """
    QuitScreen {
        align: center middle;
    }
    QuitScreen > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    QuitScreen Horizontal {
        height: auto;
        margin-top: 1;
    }
    QuitScreen Button {
        width: auto;
        min-width: 0;
        margin-right: 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "choose('stop')", "Stop the run"),
        Binding("l", "choose('leave')", "Leave it running"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Quit the console.[/b] The training run is still going.")
            yield Static("[dim]Leave it running and `tuidebug attach` brings the console back.[/]")
            with Horizontal():
                yield Button("Stop the run [s]", id="stop", variant="error")
                yield Button("Leave it running [l]", id="leave", variant="primary")
                yield Button("Cancel [esc]", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: QuitChoice) -> None:
        self.dismiss(choice)
