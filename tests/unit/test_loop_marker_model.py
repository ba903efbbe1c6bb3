"""Epoch and validation markers on the loss chart: RunModel folding LoopEvents.

The messages are the ones the Lightning and HF integrations send (``LoopEvent``), in the
orders a console gets them: live (a later step's point may come first, in one batch of the
probe's link) and replayed to a console that attaches later (every event before any step).
"""

from __future__ import annotations

from tuidebug.console.history import MinMaxHistory
from tuidebug.console.run_model import RunModel
from tuidebug.console.widgets.loss_chart import LossChartRenderable
from tuidebug.wire.loop_messages import EPOCH, VALIDATION, LoopEvent
from tuidebug.wire.messages import Message, StepPoint, Steps


def steps(first: int, last: int) -> Steps:
    return Steps(points=[StepPoint(s, float(s), 2.0 / s) for s in range(first, last + 1)])


def epoch(step: int, number: int, rank: int = 0) -> LoopEvent:
    return LoopEvent(step=step, kind=EPOCH, epoch=number, framework="lightning", rank=rank)


def val(step: int, number: int = 1) -> LoopEvent:
    metrics = {"val_loss": 1.5}
    return LoopEvent(step=step, kind=VALIDATION, epoch=number, metrics=metrics)


def markers(model: RunModel) -> list[tuple[int, str]]:
    return [(m.step, m.label) for m in model.loss.markers]


def label_row(history: MinMaxHistory) -> str:
    lines = LossChartRenderable(history, width=100, height=12).render_lines(100, 12)
    return "".join(segment.text for segment in lines[-1])


def test_live_events_mark_their_steps_and_never_rewind_the_axis() -> None:
    model = RunModel()
    model.fold([steps(1, 5), val(5)])
    # The epoch ended at step 7, but points 8-9 were queued before the event went out.
    model.fold([steps(6, 9)])
    model.fold([epoch(7, 1)])
    model.fold([steps(10, 20)])
    assert markers(model) == [(5, "val"), (7, "ep 1")]
    assert model.loss.rewinds == 0 and model.loss.x_range() == (1, 20)
    row = label_row(model.loss)
    assert "val@5" in row and "ep 1@7" in row


def test_an_epoch_end_and_a_validation_at_one_step_share_a_marker_in_either_order() -> None:
    lightning = RunModel()  # Lightning validates, then ends the epoch
    lightning.fold([steps(1, 7), val(7), epoch(7, 1), steps(8, 14), val(14, 2)])
    lightning.fold([epoch(14, 2), steps(15, 16)])
    hf = RunModel()  # the Trainer ends the epoch, then evaluates
    hf.fold([steps(1, 7), epoch(7, 1), val(7), steps(8, 14), epoch(14, 2)])
    hf.fold([val(14, 2), steps(15, 16)])
    expected = [(7, "ep 1+val"), (14, "ep 2+val")]
    assert markers(lightning) == markers(hf) == expected
    assert "ep 1+val@7" in label_row(hf.loss)


def test_a_console_attaching_later_gets_every_marker_before_the_steps() -> None:
    # The supervisor's replay: run info, the stored events (all of them), then the steps.
    events: list[Message] = [val(5), epoch(7, 1), val(10, 2), epoch(14, 2), val(15, 3)]
    model = RunModel()
    model.fold(events)
    model.fold([steps(1, 16)])
    assert markers(model) == [(5, "val"), (7, "ep 1"), (10, "val"), (14, "ep 2"), (15, "val")]
    assert model.loss.rewinds == 0


def test_other_ranks_and_unknown_kinds_make_no_marker() -> None:
    model = RunModel()
    model.fold([steps(1, 5), epoch(3, 1, rank=1), LoopEvent(step=4, kind="test-loop")])
    assert markers(model) == []


def test_a_marker_after_a_restore_stays_on_the_new_branch() -> None:
    history = MinMaxHistory()
    for s in range(1, 21):
        history.append(s, 1.0)
    history.mark(10, "restore")  # a restore to step 10: x 21 is step 10, x 23 step 12
    for s in range(11, 16):
        history.append(s, 0.5)
    late = history.mark(12, "ep 1", rewind=False)  # behind the last step: no second rewind
    assert history.rewinds == 1 and (late.x, late.step) == (23, 12)
    early = history.mark(3, "val", rewind=False)  # before the branch began: at its start
    assert history.rewinds == 1 and early.x == 21
    again = history.relabel(late, "ep 1+val")
    assert again.label == "ep 1+val" and history.markers[-2] is again
