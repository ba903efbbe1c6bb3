"""The dashboard's step-time lines: a stacked bar of where a step's time goes (data wait,
forward, backward, optimizer step, other), the figures, and each phase's history.

Hidden until the first ``StepPhases`` arrives (a run recorded before the feature, or with it
off, shows the dashboard as before). ``sync()`` once per frame redraws only when the state's
version or the widget's width moved.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from tuidebug.console.phases_state import PhasesState, RankPhases
from tuidebug.console.widgets.sparkline_table import sparkline_text
from tuidebug.wire.phase_messages import PHASES

COLORS = {
    "data": "red",
    "forward": "green",
    "backward": "blue",
    "optimizer": "magenta",
    "other": "yellow",
}
SHORT = {"data": "data", "forward": "fwd", "backward": "bwd", "optimizer": "opt", "other": "other"}


def fmt_ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def stacked_bar(means: dict[str, float], width: int) -> Text:
    """``width`` cells split between the phases in proportion (each non-zero phase at least one
    cell; the largest absorbs the rounding)."""
    total = sum(means.values())
    text = Text()
    if total <= 0 or width <= 0:
        return text
    cells = {name: round(value / total * width) for name, value in means.items()}
    for name, value in means.items():
        if value > 0 and cells[name] == 0:
            cells[name] = 1
    largest = max(means, key=lambda name: means[name])
    cells[largest] = max(1, cells[largest] + width - sum(cells.values()))
    for name in PHASES:
        n = cells.get(name, 0)
        if n <= 0:
            continue
        label = SHORT[name] if n >= len(SHORT[name]) else ""  # never a cut name
        text.append(label.center(n), style=f"bold white on {COLORS[name]}")
    return text


def breakdown_lines(rank: RankPhases, width: int) -> list[Text]:
    """The three lines: step time and bar; figures; per-phase history."""
    means = rank.means()
    step_ms = sum(means.values())
    first, last = rank.span()
    head = Text("step ", style="bold")
    head.append(fmt_ms(step_ms), style="bold")
    head.append(" ")
    clock = " (device time)" if rank.clock == "cuda" else ""
    tail = Text(f" steps {first}-{last}{clock}", style="dim")
    bar_width = max(10, width - len(head) - len(tail))
    line1 = head + stacked_bar(means, bar_width) + tail
    figures = {
        name: f"{SHORT[name]} {fmt_ms(means[name])} {means[name] / (step_ms or 1.0):.0%}"
        for name in PHASES
    }
    # One cell per phase, an even share of the width (the history below it as wide); where
    # the figures do not fit, the bar's colours name the phases and the names go.
    cell = max(8, width // len(PHASES))
    if max(len(f) for f in figures.values()) >= cell:
        figures = {
            name: f"{fmt_ms(means[name]).replace(' ', '')} {means[name] / (step_ms or 1.0):.0%}"
            for name in PHASES
        }
    line2 = Text()
    line3 = Text()
    for name in PHASES:
        line2.append(figures[name][: cell - 1].ljust(cell), style=COLORS[name])
        spark = sparkline_text(rank.history[name], cell - 1, style=COLORS[name])
        line3.append_text(spark)
        line3.append(" " * (cell - len(spark)))
    return [line1, line2, line3]


class StepBreakdown(Static):
    """Compact step-time summary for the dashboard."""

    DEFAULT_CSS = """
    StepBreakdown {
        height: auto;
        width: 1fr;
        padding: 0 1;
        display: none;
    }
    """

    def __init__(self, state: PhasesState) -> None:
        super().__init__(id="step-breakdown")
        self.state = state
        self._shown: tuple[int, int] = (-1, -1)

    def on_resize(self) -> None:
        self.sync()

    def sync(self) -> None:
        state = self.state
        width = self.size.width or 78
        key = (state.version, width)
        if key == self._shown:
            return
        self._shown = key
        rank = state.shown_rank()
        if rank is None:
            return
        self.display = True
        lines = breakdown_lines(rank, width)
        if state.capturing():
            lines[0].append("  profiling...", style="bold yellow")
        self.update(Group(*lines))
