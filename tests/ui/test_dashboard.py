"""The dashboard under Pilot: what it shows, and how quitting behaves.

The app is real; its messages come from a scripted source (a list of wire messages, as a
supervisor would send them), so every figure on screen is known in advance.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from textual.widgets import Static

from tuidebug.console.app import ConsoleExit, TuidebugApp
from tuidebug.console.screens.help import HelpScreen
from tuidebug.console.screens.quit import QuitScreen
from tuidebug.console.widgets.loss_chart import LossChart
from tuidebug.console.widgets.run_header import RunHeader
from tuidebug.console.widgets.sparkline_table import ScalarsTable
from tuidebug.console.widgets.status_banner import StatusBanner
from tuidebug.wire.hparam_messages import HparamGroup, Hparams, OptimizerHparams
from tuidebug.wire.messages import (
    Command,
    HistoryDone,
    Message,
    ModelSeen,
    OptimizerSeen,
    Output,
    RunInfo,
    ScriptError,
    StepPoint,
    Steps,
)

STARTED = 1_700_000_000.0


class ScriptedSource:
    """Yields the given batches, then stays open (a live run) or ends (a finished one)."""

    def __init__(self, batches: list[list[Message]], live: bool = True) -> None:
        self.batches_ = batches
        self.live = live
        self.sent: list[Message] = []
        self.closed = False

    async def batches(self) -> AsyncIterator[list[Message]]:
        given = 0
        while given < len(self.batches_) or (self.live and not self.closed):
            if given < len(self.batches_):  # a test may append a batch to a live run
                given += 1
                yield self.batches_[given - 1]
            else:
                await asyncio.sleep(0.05)

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


def run_info(state: str = "running", **extra: Any) -> RunInfo:
    return RunInfo(
        run_id="20261130-000000-abcd",
        script="train.py",
        args=["--steps", "500"],
        cwd="/tmp",
        started=STARTED,
        state=state,
        pid=42,
        **extra,
    )  # type: ignore[arg-type]


def history(count: int = 500) -> list[Message]:
    points = [
        StepPoint(
            s,
            STARTED + s * 0.01,
            2.3 * math.exp(-s / 120) + 0.1 + 0.02 * math.sin(s),
            {"lr": 0.001, "grad_norm": 1.0 + 0.5 * math.cos(s / 10)},
        )
        for s in range(1, count + 1)
    ]
    return [
        ModelSeen(
            name="model", class_name="Classifier", parameters=39034, trainable=39034, modules=12
        ),
        OptimizerSeen(class_name="AdamW", lr=0.003),
        Steps(step=count, points=points),
        Output(
            data=b"classifier: 8000 samples\r\n"
            + b"".join(
                b"step %4d/500  loss %.4f\r\n" % (s, 2.3 * math.exp(-s / 120))
                for s in range(50, 501, 50)
            )
            + b"[####----] 400/500\r[########] 500/500"
        ),
        HistoryDone(steps=count),
    ]


def finished() -> list[list[Message]]:
    return [[run_info(), *history()], [run_info("finished", exit_code=0, ended=STARTED + 5.0)]]


def crashed() -> list[list[Message]]:
    error = ScriptError(
        step=120,
        exc_type="ValueError",
        text="boom at step 120",
        traceback='Traceback (most recent call last):\n  File "train.py", line 7, in <module>\n'
        '    raise ValueError("boom at step 120")\nValueError: boom at step 120\n',
    )
    return [
        [run_info(), *history(120), error],
        [run_info("crashed", exit_code=1, ended=STARTED + 2.0)],
    ]


def test_live_dashboard_shows_state_step_loss_and_output() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource([[run_info(), *history()]]))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            header = str(app.screen.query_one(RunHeader).headline())
            assert "running" in header and "step 500" in header and "loss 0.1" in header
            assert not app.screen.query_one(StatusBanner).display
            output = app.screen.query_one("#output").render()
            assert "500/500" in str(output)  # the progress bar's latest redraw, not its history
            assert "[####----]" not in str(output)
            models = app.screen.query_one("#models", Static).render()
            assert "Classifier" in str(models) and "AdamW" in str(models)

    asyncio.run(scenario())


def test_the_model_panel_shows_the_lr_as_of_now() -> None:
    """The optimizer's lr as first seen (0.003) until the run's hyperparameter table says
    otherwise (a scheduler, a change from the console): then the table's, per group."""
    table = Hparams(
        optimizers=[
            OptimizerHparams(
                name="optimizer",
                class_name="AdamW",
                groups=[HparamGroup(index=0, lr=0.0005), HparamGroup(index=1, lr=5e-05)],
            )
        ]
    )

    async def scenario() -> None:
        source = ScriptedSource([[run_info(), *history()]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            models = str(app.screen.query_one("#models", Static).render())
            assert "AdamW lr=0.003" in models
            source.batches_.append([table])  # the live run's next batch
            await pilot.pause(0.3)
            models = str(app.screen.query_one("#models", Static).render())
            assert "AdamW lr=0.0005/5e-05" in models and "0.003" not in models

    asyncio.run(scenario())


def test_a_crash_is_shown_with_its_exit_code_and_traceback() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource(crashed(), live=False))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            banner = app.screen.query_one(StatusBanner)
            assert banner.display and banner.has_class("-crashed")
            group = banner.render()
            text = "\n".join(str(part) for part in group.renderables)  # type: ignore[union-attr]
            assert "exit code 1" in text and "ValueError: boom at step 120" in text
            assert "line 7" in text

    asyncio.run(scenario())


def test_quit_asks_and_leave_keeps_the_run() -> None:
    async def scenario() -> None:
        source = ScriptedSource([[run_info(), *history()]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("l")
        assert app.return_value is not None and app.return_value.kind == ConsoleExit.LEFT_RUNNING
        assert source.sent == []

    asyncio.run(scenario())


def test_ctrl_c_asks_too_and_stop_sends_the_command() -> None:
    async def scenario() -> None:
        source = ScriptedSource([[run_info(), *history()]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("ctrl+c")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("escape")  # cancel: still on the dashboard
            assert not isinstance(app.screen, QuitScreen)
            await pilot.press("ctrl+c", "s")
        assert app.return_value is not None and app.return_value.kind == ConsoleExit.STOPPED
        assert [m.name for m in source.sent if isinstance(m, Command)] == ["stop-run"]

    asyncio.run(scenario())


def test_quit_on_a_finished_run_does_not_ask() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource(finished(), live=False))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            assert "finished: 500 steps" in str(app.screen.query_one(StatusBanner).render())
            await pilot.press("q")
        assert app.return_value is not None and app.return_value.kind == ConsoleExit.ENDED
        assert app.return_value.exit_code == 0 and app.return_value.steps == 500

    asyncio.run(scenario())


def test_help_and_log_scale_keys() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource(finished(), live=False))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            chart = app.screen.query_one(LossChart)
            assert not chart.log_scale
            await pilot.press("l")
            assert chart.log_scale

    asyncio.run(scenario())


def test_a_run_that_ends_before_any_step_closes_the_console() -> None:
    async def scenario() -> None:
        batches: list[list[Message]] = [
            [run_info(), HistoryDone()],
            [run_info("crashed", exit_code=1, ended=STARTED + 1)],
        ]
        app = TuidebugApp(source=ScriptedSource(batches, live=False), exit_on_early_end=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.5)
        assert app.return_value is not None and app.return_value.steps == 0
        assert app.return_value.exit_code == 1

    asyncio.run(scenario())


def test_a_run_without_scalars_shows_no_empty_scalars_table() -> None:
    async def scenario() -> None:
        points = [StepPoint(s, STARTED + s * 0.01, 1.0 / s, {}) for s in range(1, 51)]
        batches: list[list[Message]] = [[run_info(), Steps(step=50, points=points)]]
        app = TuidebugApp(source=ScriptedSource(batches))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            assert not app.screen.query_one(ScalarsTable).display
            assert app.screen.query_one("#side").border_title == "model"

    asyncio.run(scenario())


def test_dashboard_snapshot(snap_compare: Any) -> None:
    assert snap_compare(
        TuidebugApp(source=ScriptedSource(finished(), live=False)),
        terminal_size=(100, 30),
        run_before=lambda pilot: pilot.pause(0.3),
    )


def test_dashboard_snapshot_small_terminal(snap_compare: Any) -> None:
    assert snap_compare(
        TuidebugApp(source=ScriptedSource(crashed(), live=False)),
        terminal_size=(80, 24),
        run_before=lambda pilot: pilot.pause(0.3),
    )


def test_a_tiny_terminal_gets_a_plain_message_and_recovers() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource(finished(), live=False))
        async with app.run_test(size=(40, 12)) as pilot:
            await pilot.pause(0.3)
            notice = app.screen.query_one("#too-small", Static)
            assert notice.display and "40x12" in str(notice.render())
            assert not app.screen.query_one(RunHeader).display
            await pilot.resize_terminal(100, 30)
            await pilot.pause(0.3)
            assert not notice.display and app.screen.query_one(RunHeader).display

    asyncio.run(scenario())
