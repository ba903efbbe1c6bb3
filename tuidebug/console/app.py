"""The Textual console: a client of the run's supervisor.

The app folds incoming message batches into a :class:`RunModel` as they arrive and, on a timer
(``FRAME_RATE`` per second), asks the current screen to sync its widgets with the model; each
widget redraws only when the part of the model it shows has a new version. So a script doing
10,000 steps a second costs the console a few batches and fifteen redraws a second.
"""

from __future__ import annotations

import enum
import gc
from dataclasses import dataclass
from typing import Any, ClassVar

from textual import work
from textual.app import App, SuspendNotSupported
from textual.binding import Binding, BindingType

from tuidebug.console.bridge import BridgeError, run_bridge
from tuidebug.console.extensions import extensions
from tuidebug.console.ranks_state import BAND
from tuidebug.console.run_model import RunModel
from tuidebug.console.screens.dashboard import DashboardScreen
from tuidebug.console.screens.help import HelpScreen
from tuidebug.console.screens.output import OutputScreen
from tuidebug.console.screens.prompt import PromptScreen
from tuidebug.console.screens.quit import QuitChoice, QuitScreen
from tuidebug.console.sources import Source, open_source
from tuidebug.console.widgets.loss_chart import LossChart
from tuidebug.paths import RunPaths
from tuidebug.wire.client import ConnectError
from tuidebug.wire.messages import Command

FRAME_RATE = 15


class ConsoleExit(enum.Enum):
    """How the console ended, for the command line to report."""

    ENDED = "ended"  # the run had ended; nothing to decide
    LEFT_RUNNING = "left-running"
    STOPPED = "stopped"
    RELEASED = "released"  # a script held after its error was let go; it is exiting
    ERROR = "error"


@dataclass
class ConsoleResult:
    """What ``run_console`` returns."""

    kind: ConsoleExit
    steps: int = 0
    exit_code: int | None = None
    message: str = ""


class TuidebugApp(App[ConsoleResult]):
    """The console of one run."""

    CSS_PATH = "app.tcss"
    TITLE = "tuidebug"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_console", "Quit"),
        Binding("ctrl+c", "quit_console", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("p", "pause", "Pause/resume"),
        Binding("r", "resume", "Resume", show=False),
        Binding("n", "step_once", "Step"),
        Binding("d", "debug", "Debugger"),
        Binding("g", "run_to", "Run to", show=False),
        Binding("b", "break_on", "Break on", show=False),
        Binding("e", "pause_every", "Pause every", show=False),
        Binding("l", "toggle_log_scale", "Log scale"),
        Binding("o", "output", "Output"),
    ]

    def __init__(
        self,
        paths: RunPaths | None = None,
        *,
        model: RunModel | None = None,
        source: Source | None = None,
        exit_on_early_end: bool = False,
        compare: str | None = None,
    ) -> None:
        super().__init__()
        self.paths = paths
        self.model = model or RunModel()
        self.source = source
        self.exit_on_early_end = exit_on_early_end
        # compare: the run whose loss the chart overlays from the start (`--compare RUN`).
        self.dashboard = DashboardScreen(self.model, compare=compare)
        self._bridged = 0  # how many of the run's debugger sessions this console took over
        self._extension_screens: dict[str, Any] = {}
        for extension in extensions():
            action = f"open_extension('{extension.name}')"
            self.bind(extension.key, action, description=extension.title)

    def on_mount(self) -> None:
        # Everything made so far lives as long as the app: keep it out of the collector's
        # full passes, which otherwise stall a frame for a second on a 1,000-module model.
        gc.freeze()
        self.push_screen(self.dashboard)
        self.set_interval(1 / FRAME_RATE, self.sync_screen)
        if self.source is not None or self.paths is not None:
            self.pump_messages()

    @work(exclusive=True, group="source")
    async def pump_messages(self) -> None:
        """Fold every batch from the source into the model, until the source ends."""
        if self.source is None:
            assert self.paths is not None
            try:
                self.source = await open_source(self.paths)
            except ConnectError as error:
                self.exit(ConsoleResult(ConsoleExit.ERROR, message=str(error)))
                return
        async for batch in self.source.batches():
            self.model.fold(batch)
            for notice in self.model.take_notices():
                severity = {"error": "error", "warning": "warning"}.get(notice.level, "information")
                self.notify(notice.text, severity=severity)  # type: ignore[arg-type]
            if (
                self.model.debugger is not None
                and self.model.history_loaded
                and self.model.debuggers_opened != self._bridged
            ):
                self._bridged = self.model.debuggers_opened
                self.call_later(self.hand_over_terminal)
        if self.source.live:
            self.model.mark_connection_lost()

    def sync_screen(self) -> None:
        """Bring the visible screen up to the model (at most ``FRAME_RATE`` times a second)."""
        screen = self.screen
        for extension in extensions():
            wanted = extension.wants_screen(self.model.ext[extension.name])
            if wanted and screen is not self._extension_screens.get(extension.name):
                self.action_open_extension(extension.name)
                return  # the screen syncs from the next frame, once it is mounted
        sync = getattr(screen, "sync", None)
        # A screen being torn down (the app exiting) is still mounted while its children are
        # already gone; Textual reports it as not displayed then.
        if sync is not None and screen.is_mounted and screen.display:
            sync()
        if self.exit_on_early_end and self.model.ended and self.model.steps_seen == 0:
            self.exit(self._result(ConsoleExit.ENDED))

    def on_unmount(self) -> None:
        if self.source is not None:
            self.source.close()  # the run goes on; only this console's connection ends

    def hand_over_terminal(self) -> None:
        """Give the terminal to the script's debugger until it closes (or Ctrl-])."""
        if self.paths is None or self.source is None or not self.source.live:
            return
        try:
            with self.suspend():
                outcome = run_bridge(self.paths)
        except SuspendNotSupported:
            self.notify("this terminal cannot be handed to the debugger", severity="error")
            return
        except BridgeError as error:
            self.notify(f"debugger: {error}", severity="error")
            return
        if outcome == "detached":
            where = self.model.debugger_place()
            # Longer than a toast's 5 s: the person's eyes are coming back from the debugger.
            self.notify(f"the debugger is still open in {where}: d goes back to it", timeout=10)
        elif outcome == "lost":
            self.notify("lost the run while in the debugger", severity="error")

    def _command(self, name: str, *, rank: int = -1, **args: str) -> None:
        if self.source is None or not self.source.live or self.model.ended:
            self.notify("the run is not live: nothing to control", severity="warning")
            return
        self.source.send(Command(name=name, args=args, rank=rank))

    # --- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_output(self) -> None:
        self.push_screen(OutputScreen(self.model.output, ranked=self.model.outputs))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_extension" and parameters == ("ranks",):
            return self.model.ranks.size > 1  # one process: no ranks screen, no key shown
        return True

    def action_pause(self) -> None:
        self._command("resume" if self.model.paused is not None else "pause")

    def action_resume(self) -> None:
        self._command("resume")

    def action_step_once(self) -> None:
        self._command("step")

    def action_debug(self) -> None:
        # In a job, ipdb opens in the rank chosen (k, or the ranks screen); the band: rank 0.
        ranks = self.model.ranks
        chosen = ranks.shown if ranks.size > 1 and ranks.shown is not BAND else -1
        debugger = self.model.debugger
        if debugger is not None:
            # A bridge left with Ctrl-] (at a step or post-mortem): go back to it. One debugger
            # at a time: in a job, another rank chosen gets one only after this one closes.
            if ranks.size > 1 and max(chosen, 0) != debugger.rank:
                self.notify(f"back to the debugger open in {self.model.debugger_place()}")
            self.hand_over_terminal()
        elif self.model.state == "held":
            self._command("debug")  # the supervisor sends a job's post-mortem to the failed rank
        elif self.model.paused is not None:
            self._command("debug", rank=chosen)
        else:
            self.notify("pause the run first (p), then press d for the debugger")

    def action_run_to(self) -> None:
        def answer(value: str | None) -> None:
            if value:
                self._command("run-to", step=value)

        hint = f"now at step {self.model.step:,}; the run pauses when it gets there"
        self.push_screen(PromptScreen("Run to step", hint), answer)

    def action_break_on(self) -> None:
        def answer(value: str | None) -> None:
            if value == "":
                self._command("clear-breaks")
            elif value:
                self._command("break-on", condition=value)

        hint = (
            "loss > 5 · loss nonfinite · grad_norm > 10 · step == 500 · nonfinite  "
            "(empty: clear all conditions)"
        )
        self.push_screen(PromptScreen("Pause when", hint), answer)

    def action_pause_every(self) -> None:
        def answer(value: str | None) -> None:
            if value is not None:
                self._command("pause-every", every=value or "0")

        self.push_screen(PromptScreen("Pause every N steps", "0 turns it off"), answer)

    def action_open_extension(self, name: str) -> None:
        """Show an extension's screen (made once, kept while the console runs)."""
        extension = next(e for e in extensions() if e.name == name)
        screen = self._extension_screens.get(name)
        if screen is None:
            screen = extension.make_screen(self.model.ext[name], self._send)
            self._extension_screens = {**self._extension_screens, name: screen}
            # Installed, so that a dismiss does not remove it: Textual would unmount it and
            # stop its update timer, and the same screen pushed again would compose anew but
            # never repaint (its timer is cached, dead): its first frame stayed on screen, the
            # toasts and the rows' changes never showed (seen live on the ranks screen).
            self.install_screen(screen, name=f"extension-{name}")
        if self.screen is screen:
            return
        if screen in self.screen_stack:
            while self.screen is not screen:
                self.pop_screen()
            return
        self.push_screen(screen)

    def _send(self, command: Command) -> None:
        if self.source is not None and self.source.live:
            self.source.send(command)

    def action_toggle_log_scale(self) -> None:
        chart = self.dashboard.query_one(LossChart)
        chart.log_scale = not chart.log_scale

    def action_quit_console(self) -> None:
        live = self.source is not None and self.source.live and not self.model.ended
        if not live or self.model.state == "lost":
            self.exit(self._result(ConsoleExit.ENDED))
            return
        if self.model.state == "held":
            self._command("release")  # the script already failed: let it exit
            self.exit(self._result(ConsoleExit.RELEASED))
            return
        self.push_screen(QuitScreen(), self._on_quit_choice)

    def _on_quit_choice(self, choice: QuitChoice | None) -> None:
        if choice == "stop" and self.source is not None:
            self.source.send(Command(name="stop-run", rank=-1))
            self.exit(self._result(ConsoleExit.STOPPED))
        elif choice == "leave":
            self.exit(self._result(ConsoleExit.LEFT_RUNNING))

    def _result(self, kind: ConsoleExit) -> ConsoleResult:
        info = self.model.info
        return ConsoleResult(
            kind,
            steps=self.model.steps_seen,
            exit_code=info.exit_code if info is not None else None,
        )


def run_console(
    paths: RunPaths, exit_on_early_end: bool = True, compare: str | None = None
) -> ConsoleResult:
    """Run the console on ``paths`` until the user quits; the terminal is restored after.
    ``compare``: a run whose loss curve the chart overlays (``--compare``)."""
    app = TuidebugApp(paths, exit_on_early_end=exit_on_early_end, compare=compare)
    result = app.run()
    if result is None and app.return_code:
        # Textual printed the traceback; the run itself is in another process and goes on.
        return ConsoleResult(
            ConsoleExit.ERROR,
            message=f"the console failed; the run goes on: tuidebug attach {paths.run_id}",
        )
    return result or ConsoleResult(ConsoleExit.ENDED, steps=app.model.steps_seen)
