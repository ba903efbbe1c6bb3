"""The hyperparameters screen with Pilot: the table of groups and tunables, Enter on a value
and on a tunable, * for every group, refusals of cells with nothing to set, the change marked
on the loss chart.

The run is a ScriptedSource (no probe): the commands the screen sends are read back from it,
and the probe's answers are fed as messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from test_dashboard import ScriptedSource, run_info
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from tuidebug.console.app import TuidebugApp
from tuidebug.console.run_model import RunModel
from tuidebug.console.screens.hparams import HparamsScreen
from tuidebug.console.screens.prompt import PromptScreen
from tuidebug.console.widgets.loss_chart import LossChartRenderable
from tuidebug.wire.hparam_messages import (
    HparamChanged,
    HparamGroup,
    Hparams,
    OptimizerHparams,
    TunableInfo,
)
from tuidebug.wire.messages import Command, HistoryDone, Message, StepPoint, Steps


def table(lr: float = 0.1, known: bool = True) -> Hparams:
    return Hparams(
        step=12,
        schedulers_known=known,
        optimizers=[
            OptimizerHparams(
                name="optimizer",
                class_name="SGD",
                groups=[
                    HparamGroup(index=0, lr=lr, weight_decay=0.0, momentum=0.9),
                    HparamGroup(index=1, lr=0.5, weight_decay=0.01, momentum=0.9),
                ],
                schedulers=["StepLR"],
            ),
            OptimizerHparams(
                name="optimizer2",
                class_name="Adam",
                groups=[HparamGroup(index=0, lr=0.001, weight_decay=0.0, betas=[0.9, 0.999])],
            ),
        ],
        tunables=[
            TunableInfo(name="dropout", value="0.1", default="0.1", kind="float"),
            TunableInfo(name="layers", value="[1, 2]", default="[1, 2]", kind="other"),
        ],
    )


def commands(source: ScriptedSource) -> list[Command]:
    return [m for m in source.sent if isinstance(m, Command)]


async def answer(pilot: Any, app: TuidebugApp, text: str) -> None:
    await pilot.pause(0.1)
    assert isinstance(app.screen, PromptScreen)
    await pilot.press("ctrl+a", "ctrl+k", *text, "enter")  # replace the current value
    await pilot.pause(0.1)


def test_set_a_group_value_every_group_and_a_tunable() -> None:
    messages: list[Message] = [run_info(), table(known=False), HistoryDone()]
    source = ScriptedSource([messages])

    async def scenario() -> None:
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 36)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("h")
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, HparamsScreen)
            groups = screen.query_one("#hparams-groups", DataTable)
            assert groups.row_count == 3
            assert groups.get_row_at(0)[:6] == ["optimizer (SGD)", "0", "0.1", "0", "0.9", "—"]
            assert groups.get_row_at(2)[5] == "0.9,0.999" and groups.get_row_at(0)[6] == "StepLR"
            assert groups.cursor_coordinate == Coordinate(0, 2)  # on the first lr
            # Opening the screen asks the probe to look for schedulers; until it answered,
            # an optimizer without any shows "?", not "none".
            assert commands(source)[-1] == Command(name="hparams-scan", rank=-1)
            assert groups.get_row_at(2)[6] == "?"
            app.model.fold([table()])
            await pilot.pause(0.2)
            assert groups.get_row_at(2)[6] == "—"

            # Enter on lr of group 0: the prompt shows the exact value; the new one is sent.
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert isinstance(app.screen, PromptScreen)
            assert "lr of optimizer (SGD), group 0" in app.screen.question
            assert app.screen.query_one("Input").value == "0.1"  # type: ignore[attr-defined]
            await answer(pilot, app, "3e-4")
            sent = commands(source)[-1]
            assert sent.name == "set-hparam"
            assert sent.args == {
                "name": "lr",
                "value": "3e-4",
                "optimizer": "optimizer",
                "group": "0",
            }

            # * on weight_decay of group 1: every group of that optimizer.
            await pilot.press("down", "right")
            await pilot.press("asterisk")
            await answer(pilot, app, "0.05")
            assert commands(source)[-1].args == {
                "name": "weight_decay",
                "value": "0.05",
                "optimizer": "optimizer",
                "group": "",
            }

            # Nothing to set: Adam has no momentum; SGD no betas; the name column is no value.
            count = len(commands(source))
            await pilot.press("down", "right")  # optimizer2's momentum
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert isinstance(app.screen, HparamsScreen)
            groups.cursor_coordinate = Coordinate(0, 0)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert isinstance(app.screen, HparamsScreen) and len(commands(source)) == count

            # Escape at the prompt sends nothing.
            groups.cursor_coordinate = Coordinate(2, 5)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert app.screen.query_one("Input").value == "0.9,0.999"  # type: ignore[attr-defined]
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert isinstance(app.screen, HparamsScreen) and len(commands(source)) == count

            # The tunables table: Tab to it, Enter, a value; "other" kinds cannot be set.
            await pilot.press("tab")
            await pilot.press("enter")
            await answer(pilot, app, "0.3")
            assert commands(source)[-1] == Command(
                name="set-tunable", args={"name": "dropout", "value": "0.3"}, rank=-1
            )
            await pilot.press("down", "enter")
            await pilot.pause(0.1)
            assert isinstance(app.screen, HparamsScreen) and len(commands(source)) == count + 1

            # The probe's answer: the table moves, the change is listed.
            event = HparamChanged(
                step=12,
                name="lr",
                optimizer="optimizer",
                groups=[0],
                old=["0.1"],
                new="0.0003",
                scheduler="StepLR base lrs scaled x0.003",
                text="lr 0.1 -> 0.0003 (optimizer, group 0) at step 12; StepLR base lrs x0.003",
            )
            app.model.fold([table(lr=0.0003), event])
            await pilot.pause(0.3)
            assert groups.get_row_at(0)[2] == "0.0003"
            events = str(screen.query_one("#hparams-events").render())
            assert "lr 0.1 -> 0.0003 (optimizer, group 0) at step 12" in events

            # One scan for schedulers per opening of the screen, none per prompt.
            scans = [c for c in commands(source) if c.name == "hparams-scan"]
            assert len(scans) == 1
            await pilot.press("escape")
            await pilot.pause(0.2)
            await pilot.press("h")
            await pilot.pause(0.2)
            assert len([c for c in commands(source) if c.name == "hparams-scan"]) == 2

    asyncio.run(scenario())


def test_a_change_is_a_marker_on_the_loss_chart_and_a_restore_is_not_a_second_one() -> None:
    model = RunModel()
    model.fold([Steps(points=[StepPoint(s, float(s), 1.0 / s) for s in range(1, 31)])])
    model.fold([HparamChanged(step=30, name="lr", new="0.001", text="lr ...")])
    model.fold([Steps(points=[StepPoint(s, float(s), 0.5) for s in range(31, 61)])])
    model.fold([HparamChanged(step=20, name="lr", kind="restore", text="restored: lr back")])
    model.fold([HparamChanged(step=10, name="dropout", kind="tunable", new="0.3", rank=1)])
    (marker,) = model.loss.markers
    assert (marker.step, marker.label) == (30, "lr=0.001")
    assert model.loss.rewinds == 0
    assert [e.kind for e in model.ext["hparams"].events] == ["set", "restore"]  # rank 0's
    lines = LossChartRenderable(model.loss, width=80, height=12).render_lines(80, 12)
    label_row = "".join(segment.text for segment in lines[-1])
    assert "lr=0.001@30" in label_row
