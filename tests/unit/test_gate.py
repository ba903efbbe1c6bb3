"""The pause gate and break conditions, on a real training loop in a thread.

Commands are posted the way the probe's I/O thread posts them; the sink stands in for the
socket only.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from test_probe import MemoryLink

from tuidebug.probe.conditions import ConditionError, parse_condition
from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import Command, Notice, Paused, Resumed, StepPoint


@pytest.mark.parametrize(
    ("text", "point", "holds"),
    [
        ("loss > 2.5", StepPoint(1, 0.0, 3.0, {}), True),
        ("loss > 2.5", StepPoint(1, 0.0, 2.5, {}), False),
        ("loss >= 2.5", StepPoint(1, 0.0, 2.5, {}), True),
        ("step == 7", StepPoint(7, 0.0, None, {}), True),
        ("grad_norm > 10", StepPoint(1, 0.0, 1.0, {"grad_norm": 11.0}), True),
        ("grad_norm > 10", StepPoint(1, 0.0, 1.0, {}), False),  # not logged: false
        ("loss nonfinite", StepPoint(1, 0.0, math.nan, {}), True),
        ("loss nonfinite", StepPoint(1, 0.0, 1.0, {"x": math.inf}), False),
        ("nonfinite", StepPoint(1, 0.0, 1.0, {"x": math.inf}), True),
        ("loss < 1e-3", StepPoint(1, 0.0, math.nan, {}), False),
    ],
)
def test_conditions(text: str, point: StepPoint, holds: bool) -> None:
    assert parse_condition(text).holds(point) is holds


@pytest.mark.parametrize("text", ["", "loss >", "loss > abc", "__import__('os') > 1", "loss ~ 3"])
def test_bad_conditions_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ConditionError):
        parse_condition(text)


class Trainer:
    """A training loop in a thread, under a probe whose gate we drive."""

    def __init__(self, steps: int) -> None:
        self.link = MemoryLink()
        self.probe = Probe(self.link)  # type: ignore[arg-type]
        self.steps = steps
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._train, daemon=True)

    def _train(self) -> None:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        dbg = self.probe.attach(model, optimizer)
        x = torch.randn(16, 4)
        for step in range(1, self.steps + 1):
            loss = model(x).pow(2).mean() + (10.0 if step == 13 else 0.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            dbg.step(loss=loss)
            time.sleep(0.002)
        self.done.set()

    def post(self, name: str, **args: str) -> None:
        self.probe.handle_command(Command(name=name, args=args, rank=-1))

    def wait_paused(self, timeout: float = 10.0) -> Paused:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.probe.gate.paused:
                return self.link.of(Paused)[-1]
            time.sleep(0.01)
        raise AssertionError("the run did not pause")


def test_pause_holds_the_step_step_moves_exactly_one_and_resume_finishes() -> None:
    trainer = Trainer(200)
    trainer.thread.start()
    time.sleep(0.05)
    trainer.post("pause")
    paused = trainer.wait_paused()
    at = trainer.probe.step
    assert paused.step == at and "test_gate.py" in paused.where  # the user's own line
    time.sleep(0.5)
    assert trainer.probe.step == at  # held
    trainer.post("step")
    deadline = time.monotonic() + 5
    while trainer.probe.step == at and time.monotonic() < deadline:
        time.sleep(0.01)
    trainer.wait_paused()
    time.sleep(0.3)
    assert trainer.probe.step == at + 1
    trainer.post("resume")
    assert trainer.done.wait(10)
    assert trainer.probe.step == 200
    assert len(trainer.link.of(Resumed)) == 2


def test_break_condition_stops_at_the_first_step_where_it_holds() -> None:
    trainer = Trainer(40)
    trainer.probe.gate.add_condition("loss > 5")
    trainer.thread.start()
    paused = trainer.wait_paused()
    assert paused.step == 13 and "loss > 5" in paused.reason
    # A console's "pause" that crossed this pause on the wire keeps the run where it is.
    trainer.post("pause")
    time.sleep(0.3)
    assert trainer.probe.gate.paused and trainer.probe.step == 13
    assert not trainer.link.of(Resumed)
    trainer.post("clear-breaks")
    trainer.post("resume")
    assert trainer.done.wait(10)


def test_run_to_and_pause_every() -> None:
    trainer = Trainer(60)
    trainer.post("run-to", step="25")
    trainer.thread.start()
    assert trainer.wait_paused().step == 25
    trainer.post("pause-every", every="10")
    trainer.post("resume")
    time.sleep(0.2)
    assert trainer.wait_paused().step == 30
    trainer.post("pause-every", every="0")
    trainer.post("resume")
    assert trainer.done.wait(10)
    notices = [n.text for n in trainer.link.of(Notice)]
    assert "running to step 25" in notices and "pause-every off" in notices


def test_a_bad_command_argument_is_a_notice_not_a_crash() -> None:
    trainer = Trainer(30)
    trainer.post("run-to", step="soon")
    trainer.post("break-on", condition="loss >>> 1")
    trainer.thread.start()
    assert trainer.done.wait(10)
    assert not trainer.probe.disabled
    levels = {n.level for n in trainer.link.of(Notice)}
    assert {"warning", "error"} <= levels


def test_a_paused_run_burns_no_cpu() -> None:
    trainer = Trainer(100)
    trainer.thread.start()
    trainer.post("pause")
    trainer.wait_paused()
    before = time.thread_time()  # this thread; the paused one is measured by the process
    process_before = time.process_time()
    time.sleep(1.0)
    spent = time.process_time() - process_before - (time.thread_time() - before)
    assert spent < 0.05, f"the paused training thread used {spent:.3f}s of CPU in 1s"
    trainer.post("resume")
    assert trainer.done.wait(10)
