"""Step time (key P): the dashboard's stacked bar of where a step's time goes, and the screen
with each phase's history and ``torch.profiler`` captures on demand."""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.phases_state import PhasesState


def _screen(state: PhasesState, send: SendCommand) -> Any:
    from tuidebug.console.screens.profile import ProfileScreen

    return ProfileScreen(state, send)


def _dashboard_widget(state: PhasesState) -> Any:
    from tuidebug.console.widgets.step_breakdown import StepBreakdown

    return StepBreakdown(state)


EXTENSION = ConsoleExtension(
    name="phases",
    make_state=PhasesState,
    key="P",
    title="Step time/profile",
    make_screen=_screen,
    make_dashboard_widget=_dashboard_widget,
    dashboard_row=True,
)
