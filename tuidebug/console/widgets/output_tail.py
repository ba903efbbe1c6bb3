"""The last lines the script wrote to its terminal, colours and progress bars included."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tuidebug.console.terminal_text import RankedText, TerminalText


class OutputTail(Widget):
    """Shows as many of the latest output lines as fit; redraws only when output changed."""

    DEFAULT_CSS = """
    OutputTail {
        height: 1fr;
        min-height: 3;
        border: round $surface-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    version = reactive(-1, init=False)
    """The TerminalText version last drawn."""

    def __init__(self, text: TerminalText | RankedText, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.text = text
        """What it shows: one process's text, or a job's every rank, each line marked."""
        self.border_title = "output"

    def sync(self) -> None:
        """Redraw if new output arrived (called once per frame by the app)."""
        self.version = self.text.version

    def show(self, text: TerminalText | RankedText) -> None:
        """Show another text (a run turned out to be a job of several ranks)."""
        if text is not self.text:
            self.text = text
            self.refresh()

    def render(self) -> RenderableType:
        lines = self.text.tail(max(1, self.content_region.height))
        if not lines:
            return Text("(no output yet)", style="dim")
        rendered = Text("\n").join(Text.from_ansi(line, no_wrap=True) for line in lines)
        rendered.no_wrap = True
        rendered.overflow = "ellipsis"
        return rendered
