"""The alerts screen and the dashboard count, driven with Textual's Pilot."""

from __future__ import annotations

import asyncio

from textual.app import App

from tuidebug.console.checks_state import ChecksState
from tuidebug.console.extensions.checks import EXTENSION, summary_text
from tuidebug.console.screens.alerts import AlertsScreen
from tuidebug.wire.check_messages import Alert, LrFindResult
from tuidebug.wire.messages import Command


def alert(rule: str, severity: str, step: int, layer: str = "") -> Alert:
    return Alert(
        rule=rule,
        severity=severity,
        step=step,
        message=f"{rule} at {step}",
        why="why",
        fix="the fix",
        place="model",
        layer=layer,
    )


def test_state_counts_and_silence() -> None:
    state = ChecksState()
    state.fold([alert("same-batch", "warning", 5), alert("grad-not-zeroed", "error", 2)])
    assert [a.rule for a in state.visible()] == ["grad-not-zeroed", "same-batch"]
    assert summary_text(state) == "checks: 1 error, 1 warning (a)"
    state.silence("same-batch")
    assert state.counts() == {"error": 1, "warning": 0, "info": 0}


async def _alerts_screen_silences_and_requests_lr_find() -> None:
    state = ChecksState()
    state.fold([alert("dead-relu", "warning", 7, layer="1"), alert("lr-zero", "error", 12)])
    state.fold(
        [
            LrFindResult(
                lrs=[1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
                losses=[2, 1.9, 1.2, 0.9, 3],
                suggested=1e-3,
                restored=True,
            )
        ]
    )
    sent: list[Command] = []
    screen = EXTENSION.make_screen(state, sent.append)
    assert isinstance(screen, AlertsScreen)

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    async with Host().run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        detail = str(screen.query_one("#alert-detail").render())
        assert "lr-zero" in detail and "the fix" in detail
        await pilot.press("i")
        assert sent[-1].name == "checks-ignore" and sent[-1].args == {"rule": "lr-zero"}
        screen.sync()
        await pilot.pause()
        assert [a.rule for a in screen._rows] == ["dead-relu"]
        await pilot.press("f")
        assert sent[-1].name == "lr-find"
        extra = str(screen.query_one("#alerts-extra").render())
        assert "suggested 1.00e-03" in extra


def test_alerts_screen_silences_and_requests_lr_find() -> None:
    asyncio.run(_alerts_screen_silences_and_requests_lr_find())
