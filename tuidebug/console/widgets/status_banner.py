"""How the run ended, shown prominently: final figures, or the exit code and traceback."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tuidebug.console.formatting import format_duration, format_value
from tuidebug.console.run_model import RunModel

TRACEBACK_LINES = 14  # the end of a traceback says what went wrong; keep the banner bounded


class EndBanner(Widget):
    """Hidden while the run is alive; after it ends, says how, in the colours of the outcome."""

    DEFAULT_CSS = """
    EndBanner {
        height: auto;
        max-height: 18;
        display: none;
        padding: 0 1;
        border: heavy $success;
    }
    EndBanner.-crashed {
        border: heavy $error;
    }
    EndBanner.-stopped, EndBanner.-lost {
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
        shown = self.model.ended or state == "lost"
        self.display = shown
        for name in ("finished", "crashed", "stopped", "lost"):
            self.set_class(state == name, f"-{name}")
        self.version = self.model.version

    def render(self) -> RenderableType:
        model = self.model
        info = model.info
        state = model.state
        code = info.exit_code if info else None
        took = format_duration(model.elapsed())
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
        title = Text.assemble(
            (state, "bold red" if state == "crashed" else "bold yellow"),
            f" with exit code {code}" if code is not None else "",
            f" at step {model.step:,} after {took}",
        )
        if model.error is None:
            return title
        title.append(f" — {model.error.exc_type}: {model.error.text}", style="bold")
        lines = model.error.traceback.rstrip("\n").splitlines()[-TRACEBACK_LINES:]
        return Group(title, Text("\n".join(lines), style="red"))
