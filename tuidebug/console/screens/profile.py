"""Step time and profiler (key P): each phase's history, and ``torch.profiler`` captures.

Keys: ``c`` captures the next 5 steps, ``C`` the next 20 (from the next step boundary; the run
goes on meanwhile); Escape goes back. A finished capture shows its trace file (for a browser's
Perfetto, or chrome://tracing), the top operators by self time and each captured step's phases,
so nobody needs a browser for the answer.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tuidebug.console.extensions import SendCommand
from tuidebug.console.phases_state import PhasesState
from tuidebug.console.widgets.sparkline_table import sparkline_text
from tuidebug.console.widgets.step_breakdown import COLORS, breakdown_lines, fmt_ms
from tuidebug.profile_cli import op_rows, timeline_lines
from tuidebug.wire.messages import Command
from tuidebug.wire.phase_messages import PHASES


class ProfileScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,P", "back", "Back"),
        Binding("c", "capture(5)", "Profile 5 steps"),
        Binding("C", "capture(20)", "Profile 20 steps"),
    ]
    DEFAULT_CSS = """
    ProfileScreen #profile-phases { height: auto; padding: 0 1; }
    ProfileScreen #profile-status { height: auto; padding: 0 1; background: $boost; }
    ProfileScreen #profile-ops { height: auto; max-height: 18; }
    ProfileScreen #profile-scroll { height: 1fr; }
    ProfileScreen #profile-timeline { padding: 0 1; }
    """

    def __init__(self, state: PhasesState, send: SendCommand) -> None:
        super().__init__()
        self.state = state
        self._send = send
        self._shown = (-1, -1)
        self.asked = 0

    def compose(self) -> ComposeResult:
        yield Static(id="profile-phases")
        yield Static(id="profile-status")
        table: DataTable[str] = DataTable(id="profile-ops", cursor_type="row", zebra_stripes=True)
        table.add_columns("operator", "calls", "self", "share", "input shapes")
        yield table
        with VerticalScroll(id="profile-scroll"):
            yield Static(id="profile-timeline")
        yield Footer()

    def on_mount(self) -> None:
        self.sync()

    def on_resize(self) -> None:
        self.sync()

    def action_back(self) -> None:
        self.dismiss()

    def action_capture(self, steps: int) -> None:
        self.asked = steps
        self._send(Command(name="profile", rank=-1, args={"steps": str(steps)}))
        self._shown = (-1, -1)
        self.sync()

    def phases_text(self, width: int) -> Group | Text:
        rank = self.state.shown_rank()
        if rank is None:
            return Text("no step-time figures yet (they come after the second step)", style="dim")
        lines: list[Text] = breakdown_lines(rank, width)[:2]
        history_width = max(10, width - 20)
        for name in PHASES:
            line = Text(f"{name:<10}", style=COLORS[name])
            last = rank.history[name].last_value
            line.append(f"{fmt_ms(last if last is not None else 0.0):>9} ")
            line.append_text(sparkline_text(rank.history[name], history_width, COLORS[name]))
            lines.append(line)
        return Group(*lines)

    def status_text(self) -> str:
        state = self.state
        capturing = state.capturing()
        if capturing:
            started = state.started[capturing[0]]
            return (
                f"profiling steps {started.step + 1}-{started.step + started.steps} "
                f"({', '.join(started.activities)})..."
            )
        result = state.latest_result()
        if result is None:
            if self.asked:
                return f"asked for a capture of {self.asked} steps: it starts at the next step"
            return "c: profile the next 5 steps · C: the next 20 (torch.profiler; the run goes on)"
        if result.error:
            return f"the capture failed: {result.error}"
        what = "self device time" if result.sort == "self_device" else "self CPU time"
        return (
            f"steps {result.first}-{result.step}: {result.wall:.2f} s captured, "
            f"{result.overhead:.2f} s to write the trace · by {what}\n"
            f"trace: {result.trace} ({result.trace_bytes / 1e6:.1f} MB)"
        )

    def sync(self) -> None:
        width = self.size.width or 80
        key = (self.state.version, width)
        if key == self._shown:
            return
        self._shown = key
        self.query_one("#profile-phases", Static).update(self.phases_text(width - 2))
        self.query_one("#profile-status", Static).update(Text(self.status_text()))
        table = self.query_one("#profile-ops", DataTable)
        result = self.state.latest_result()
        table.clear()
        if result is not None and not result.error:
            for row in op_rows(result):
                table.add_row(*row)
            lines = ["each captured step (ms):", *timeline_lines(result)]
            self.query_one("#profile-timeline", Static).update(Text("\n".join(lines)))
