"""The one-line status of a run: state, script, step, speed, time, loss."""

from __future__ import annotations

import os

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from tuidebug.console.formatting import format_duration, format_rate, format_value
from tuidebug.console.ranks_state import BAND
from tuidebug.console.run_model import RunModel

STATE_STYLES = {
    "connecting": "dim",
    "starting": "yellow",
    "running": "bold green",
    "finished": "bold blue",
    "crashed": "bold white on red",
    "stopped": "bold yellow",
    "lost": "bold red",
    "paused": "bold black on yellow",
    "held": "bold white on red",
}


class RunHeader(Static):
    """Run state and the headline figures, redrawn when the model's version changes."""

    DEFAULT_CSS = """
    RunHeader {
        height: 1;
        background: $boost;
        padding: 0 1;
    }
    """

    version = reactive(-1, init=False)
    """The RunModel version last drawn."""

    def __init__(self, model: RunModel, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model = model

    def sync(self) -> None:
        """Redraw if the model changed (called once per frame by the app)."""
        self.version = self.model.version

    def watch_version(self) -> None:
        self.update(self.headline())

    def headline(self) -> Text:
        """The header's text: the figures first, the script last (it is cut on narrow screens)."""
        model = self.model
        text = Text(no_wrap=True, overflow="ellipsis")
        state = model.state
        text.append(f" {state} ", style=STATE_STYLES.get(state, ""))
        if model.info is not None and model.info.exit_code is not None and model.ended:
            text.append(f" exit {model.info.exit_code}", style=STATE_STYLES.get(state, ""))
        moving = model.state == "running"
        if model.ranks.size > 1:
            self._job_figures(text, moving)
        else:
            text.append(f"  step {model.step:,}")
            text.append("  loss ")
            text.append(format_value(model.last_loss), style="bold")
            if len(model.loss):
                text.append(f" (smoothed {format_value(model.loss.smoothed_last())})", style="dim")
            text.append(f"  {format_rate(model.steps_per_second() if moving else None)}")
        text.append(f"  {format_duration(model.elapsed())}")
        if model.info is not None:
            # The script's name and arguments; its folder is in `tuidebug ls` and the help.
            script = " ".join([os.path.basename(model.info.script), *model.info.args])
            text.append(f"  {script}", style="bold")
        return text

    def _job_figures(self, text: Text, moving: bool) -> None:
        """A job: the figures of the rank the chart shows, or of every rank for the band."""
        ranks = self.model.ranks
        text.append(f"  {ranks.shown_label()}", style="bold cyan")
        trouble = ranks.trouble()
        if trouble:
            text.append(f" ({trouble}: R)", style="yellow")
        if ranks.shown is not BAND:
            rank = ranks.rank(ranks.shown)
            text.append(f"  step {rank.step:,}")
            text.append("  loss ")
            text.append(format_value(rank.last_loss), style="bold")
            if len(rank.loss):
                text.append(f" (smoothed {format_value(rank.loss.smoothed_last())})", style="dim")
            text.append(f"  {format_rate(rank.steps_per_second() if moving else None)}")
            return
        # The ranks still training (all of them once the job is over).
        started = [s for s in ranks.ordered() if s.steps_seen]
        started = [s for s in started if s.alive] or started
        steps = [s.step for s in started] or [0]
        low, high = min(steps), max(steps)
        text.append(f"  step {low:,}" if low == high else f"  steps {low:,}-{high:,}")
        losses = [s.last_loss for s in started if s.last_loss is not None]
        text.append("  loss ")
        if losses:
            text.append(format_value(sum(losses) / len(losses)), style="bold")
            if min(losses) != max(losses):
                spread = f"{format_value(min(losses))}-{format_value(max(losses))}"
                text.append(f" ({spread})", style="dim")
        else:
            text.append(format_value(None), style="bold")
        # The job goes at the pace of its slowest rank.
        rates = [r for s in started if (r := s.steps_per_second()) is not None]
        text.append(f"  {format_rate(min(rates) if rates and moving else None)}")
