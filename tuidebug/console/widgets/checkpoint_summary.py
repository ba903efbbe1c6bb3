"""One dashboard line about checkpoints: the last save or restore, and where files go."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from tuidebug.wire.checkpoint_messages import CheckpointSaved

if TYPE_CHECKING:
    from tuidebug.console.checkpoints_state import CheckpointsState


def summary_text(state: CheckpointsState) -> Text:
    """ "ckpt  saved step-00000040.pt at step 40 · every 20, keep 3 · c: browser"."""
    text = Text("ckpt  ", style="bold")
    latest = state.last_event
    if latest is None:
        text.append("none saved yet (c)", style="bright_black")
    elif isinstance(latest, CheckpointSaved):
        if latest.ok:
            name = os.path.basename(latest.path)
            text.append(f"saved {name} at step {latest.step:,}", style="green")
        else:
            text.append(f"save failed: {latest.error}", style="red")
    else:
        name = os.path.basename(latest.path)
        verb = "resumed from" if latest.kind == "resume" else "restored"
        if latest.ok:
            text.append(
                f"{verb} {name}: step {latest.from_step:,} → {latest.step:,}", style="yellow"
            )
        else:
            text.append(f"{verb} {name} refused: {latest.error}", style="red")
    config = state.config
    if config is not None and (config.save_every or config.keep):
        extra = []
        if config.save_every:
            extra.append(f"every {config.save_every:,} steps")
        if config.keep:
            extra.append(f"keep {config.keep}")
        text.append(" · " + ", ".join(extra), style="bright_black")
    return text


class CheckpointSummary(Static):
    """The dashboard's checkpoint line; ``sync()`` redraws only when the state moved."""

    DEFAULT_CSS = """
    CheckpointSummary {
        height: 1;
    }
    """

    def __init__(self, state: CheckpointsState) -> None:
        super().__init__("")
        self.state = state
        self._version = -1

    def sync(self) -> None:
        if self.state.version == self._version:
            return
        self._version = self.state.version
        self.update(summary_text(self.state))
