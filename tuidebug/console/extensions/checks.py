"""The training-bug checks in the console: alerts screen (key a) and a count on the dashboard."""

from __future__ import annotations

from typing import Any

from tuidebug.console.checks_state import ChecksState
from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.wire.messages import Command


def _screen(state: ChecksState, send: SendCommand) -> Any:
    from tuidebug.console.screens.alerts import AlertsScreen

    def silence(rule: str) -> None:
        send(Command(name="checks-ignore", args={"rule": rule}, rank=-1))

    def lr_find() -> None:
        send(Command(name="lr-find", args={"steps": "100"}, rank=-1))

    return AlertsScreen(state, on_silence=silence, on_lr_find=lr_find)


def summary_text(state: ChecksState) -> str:
    counts = state.counts()
    if not any(counts.values()):
        return "checks: no alerts"
    parts = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n]
    return "checks: " + ", ".join(parts) + " (a)"


def _dashboard_widget(state: ChecksState) -> Any:
    from textual.widgets import Static

    class AlertCount(Static):
        """One line: how many alerts of each severity; redrawn only when they change."""

        DEFAULT_CSS = "AlertCount { width: auto; height: 1; padding: 0 1; }"

        def __init__(self) -> None:
            super().__init__(summary_text(state))
            self._version = state.version

        def sync(self) -> None:
            if state.version != self._version:
                self._version = state.version
                counts = state.counts()
                style = "bold red" if counts["error"] else "yellow" if counts["warning"] else ""
                text = summary_text(state)
                self.update(f"[{style}]{text}[/]" if style else text)

    return AlertCount()


EXTENSION = ConsoleExtension(
    name="checks",
    make_state=ChecksState,
    key="a",
    title="Alerts",
    make_screen=_screen,
    make_dashboard_widget=_dashboard_widget,
)
