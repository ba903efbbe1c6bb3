"""The script's whole output (as far as the console keeps it), scrollable."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, RichLog

from tuidebug.console.terminal_text import TerminalText


class OutputScreen(Screen[None]):
    """Every completed output line, appended as it arrives; scroll with the usual keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,o", "app.pop_screen", "Dashboard"),
    ]

    def __init__(self, text: TerminalText) -> None:
        super().__init__()
        self.text = text
        self._written = 0  # TerminalText.completed count already shown

    def compose(self) -> ComposeResult:
        yield RichLog(id="full-output", max_lines=self.text.lines.maxlen, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sync()

    def sync(self) -> None:
        """Append the lines completed since the last call."""
        new = self.text.completed - self._written
        if new <= 0:
            return
        log = self.query_one(RichLog)
        for line in list(self.text.lines)[-min(new, len(self.text.lines)) :]:
            log.write(Text.from_ansi(line, no_wrap=True))
        self._written = self.text.completed
