"""The script's whole output (as far as the console keeps it), scrollable.

For a job of several ranks every line carries its rank's mark (``[rank 1]``, ``[torchrun]`` for
the launcher's own) and ``k`` cycles which lines show: every rank's, then rank 0's, 1's, ...,
then the launcher's. For a single process the key is off and lines are shown as written.

Lines a progress bar still redraws in place (the line being written, and the rows a bar moved
back up to: ``TerminalText.live``) show below the log, as they are now, and join the log once
settled, so a redrawn bar is one line here too.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

from tuidebug.console.ranks_state import rank_label
from tuidebug.console.terminal_text import RankedText, TerminalText, marked


class OutputScreen(Screen[None]):
    """Every completed output line, appended as it arrives; scroll with the usual keys."""

    DEFAULT_CSS = """
    OutputScreen #output-filter { height: 1; padding: 0 1; display: none; }
    OutputScreen.-job #output-filter { display: block; }
    OutputScreen #output-live { height: auto; max-height: 8; padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,o", "app.pop_screen", "Dashboard"),
        Binding("k", "cycle_rank", "Rank"),
    ]

    def __init__(self, text: TerminalText, ranked: RankedText | None = None) -> None:
        super().__init__()
        self.text = text
        self.ranked = ranked
        """Every rank's lines (a job); None: ``text`` alone."""
        self.rank: int | None = None
        """The rank whose lines show (None: every rank's)."""
        self._written = 0  # settled lines (TerminalText.settled, RankedText.completed) shown
        self._job = False
        self._live: list[str] | None = None  # the live lines shown below the log

    def compose(self) -> ComposeResult:
        yield Static(id="output-filter")
        yield RichLog(id="full-output", max_lines=self.text.lines.maxlen, wrap=False)
        yield Static(id="output-live")
        yield Footer()

    def on_mount(self) -> None:
        self.sync()

    @property
    def job(self) -> bool:
        """Lines of more than one rank (or of the launcher) arrived."""
        ranked = self.ranked
        return ranked is not None and bool(ranked.ranks - {0})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_rank":
            return self.job
        return True

    def sync(self) -> None:
        """Append the lines settled since the last call; redraw the live ones."""
        if self.job != self._job:
            self._job = self.job
            self.set_class(self._job, "-job")
            self.refresh_bindings()
            self._rewrite()
            return
        if self._job:
            self._append_ranked()
            self._show_live()
            return
        text = self.text
        new = text.settled - self._written
        if new > 0:
            log = self.query_one(RichLog)
            end = len(text.lines) - min(text.reach, len(text.lines))
            for i in range(max(0, end - new), end):
                log.write(Text.from_ansi(text.lines[i], no_wrap=True))
            self._written = text.settled
        self._show_live()

    def _show_live(self) -> None:
        """The lines still redrawn in place, under the log (the filter's ranks', marked)."""
        if self._job and self.ranked is not None:
            lines = [marked(rank, line) for rank, line in self.ranked.live(self.rank)]
        else:
            lines = self.text.live()
        if lines == self._live:
            return
        self._live = lines
        live = self.query_one("#output-live", Static)
        live.display = bool(lines)  # nothing redrawn: the log takes the whole screen
        live.update(Text("\n").join(Text.from_ansi(line, no_wrap=True) for line in lines))

    def _append_ranked(self) -> None:
        ranked = self.ranked
        assert ranked is not None
        new = ranked.completed - self._written
        if new <= 0:
            return
        log = self.query_one(RichLog)
        lines = ranked.lines
        for i in range(len(lines) - min(new, len(lines)), len(lines)):
            rank, line = lines[i]
            if self.rank is None or rank == self.rank:
                log.write(Text.from_ansi(marked(rank, line), no_wrap=True))
        self._written = ranked.completed

    def _rewrite(self) -> None:
        """Every kept line again, under the current filter (a new filter, or a job seen)."""
        log = self.query_one(RichLog)
        log.clear()
        self._written = 0
        if self._job:
            assert self.ranked is not None
            shown = "every rank" if self.rank is None else rank_label(self.rank)
            self.query_one("#output-filter", Static).update(
                Text.assemble(("showing ", "bright_black"), (shown, "bold"), ("  (k)", "dim"))
            )
            for rank, line in self.ranked.select(self.rank):
                log.write(Text.from_ansi(marked(rank, line), no_wrap=True))
            self._written = self.ranked.completed
            self._show_live()
        else:
            self.sync()

    def action_cycle_rank(self) -> None:
        """Every rank, then rank 0, 1, ..., then the launcher's lines, then every rank again."""
        if self.ranked is None:
            return
        choices: list[int | None] = [None, *sorted(r for r in self.ranked.ranks if r >= 0)]
        choices += [r for r in self.ranked.ranks if r < 0]
        at = choices.index(self.rank) if self.rank in choices else 0
        self.rank = choices[(at + 1) % len(choices)]
        self._rewrite()
