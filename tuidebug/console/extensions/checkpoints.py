"""The checkpoint browser (key c): list, detail, diff, save now (s), restore (r).

The state (:mod:`tuidebug.console.checkpoints_state`) folds the probe's checkpoint messages
(plain Python, no Textual, no torch). Files are read in the console process by
:mod:`tuidebug.ckpt`, imported only when the screen needs it, so the console still starts
without importing torch. The screen and the widget import Textual: they are imported when first
built, so the RunModel, which loads every extension, stays free of it.
"""

from __future__ import annotations

from typing import Any

from tuidebug.console.checkpoints_state import CheckpointsState
from tuidebug.console.extensions import ConsoleExtension, SendCommand


def _screen(state: CheckpointsState, send: SendCommand) -> Any:
    from tuidebug.console.screens.checkpoints import CheckpointsScreen

    return CheckpointsScreen(state, send)


def _dashboard_widget(state: CheckpointsState) -> Any:
    from tuidebug.console.widgets.checkpoint_summary import CheckpointSummary

    return CheckpointSummary(state)


EXTENSION = ConsoleExtension(
    name="checkpoints",
    make_state=CheckpointsState,
    key="c",
    title="Checkpoints",
    make_screen=_screen,
    make_dashboard_widget=_dashboard_widget,
)
