"""The run's situation when it needs attention: paused, held after an error, or ended.

Hidden while the run simply runs. Paused: why, where (the user's line) and the keys that act.
Held: the traceback and the post-mortem key. Ended: the final figures, or the exit code and
traceback.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tuidebug.console.formatting import format_duration, format_value
from tuidebug.console.run_model import RunModel

TRACEBACK_LINES = 14  # the end of a traceback says what went wrong; keep the banner bounded
STATES = ("finished", "crashed", "stopped", "lost", "paused", "held")


class StatusBanner(Widget):
    """Says what the run waits for, or how it ended, in the colours of the situation."""

    DEFAULT_CSS = """
    StatusBanner {
        height: auto;
        max-height: 18;
        display: none;
        padding: 0 1;
        border: heavy $success;
    }
    StatusBanner.-crashed, StatusBanner.-held {
        border: heavy $error;
    }
    StatusBanner.-stopped, StatusBanner.-lost, StatusBanner.-paused {
        border: heavy $warning;
    }
    """

    version = reactive(-1, init=False)
    """The RunModel version last drawn."""

    def __init__(self, model: RunModel, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model = model

    def sync(self) -> None:
        """Show, hide and redraw following the model (called once per frame by the app)."""
        state = self.model.state
        self.display = state in STATES
        for name in STATES:
            self.set_class(state == name, f"-{name}")
        self.version = self.model.version

    def render(self) -> RenderableType:
        model = self.model
        state = model.state
        took = format_duration(model.elapsed())
        if state == "paused" and model.paused is not None:
            keys = "\np/r resume · n one step · d debugger (ipdb here) · g run to step"
            if model.debugger is not None:  # the terminal came back from it with Ctrl-]
                keys = (
                    f"\nd: back to the debugger, still open in {model.debugger_place()}"
                    " · c there continues the run"
                )
            return Text.assemble(
                ("paused", "bold yellow"),
                f" at step {model.paused.step:,}: {model.paused.reason}\n",
                (model.paused.where or "", "dim"),
                (keys, "bold"),
            )
        if state == "finished":
            return Text.assemble(
                ("finished", "bold green"),
                f": {model.step:,} steps in {took}, final loss ",
                (format_value(model.last_loss), "bold"),
                f" (smoothed {format_value(model.loss.smoothed_last())})"
                if len(model.loss)
                else "",
                ("   q quits", "dim"),
            )
        if state == "lost":
            return Text.assemble(
                ("connection lost", "bold red"),
                ": the run's supervisor went away; `tuidebug attach` reconnects if it still runs",
            )
        code = model.info.exit_code if model.info else None
        title = Text.assemble(
            (state, "bold red" if state in ("crashed", "held") else "bold yellow"),
            f" with exit code {code}" if code is not None and state != "held" else "",
            f" at step {model.step:,} after {took}",
        )
        if model.error is None:
            return title
        title.append(f" — {model.error.exc_type}: {model.error.text}", style="bold")
        lines = model.error.traceback.rstrip("\n").splitlines()[-TRACEBACK_LINES:]
        parts: list[RenderableType] = [title, Text("\n".join(lines), style="red")]
        if state == "held":
            parts.append(
                Text(
                    "d: post-mortem debugger at the failing line · q: let the process exit",
                    style="bold",
                )
            )
        return Group(*parts)
