"""Epochs and validations of Lightning and HF Trainer runs as markers on the loss chart.

Each demo runs under the real ``tuidebug run --detach`` with small epochs (so a short run has
several), and the framework's own logs say where its epochs ended and its validations ran. A
console that attaches while the run goes (the supervisor's replay) and one that opens the run
after it ended (its stored history) must both mark those steps, with the framework's numbers.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from framework_runs import DEMOS, Console, history, start

from tuidebug.console.run_model import RunModel
from tuidebug.console.sources import StoredSource
from tuidebug.console.widgets.loss_chart import LossChartRenderable
from tuidebug.paths import find_run
from tuidebug.wire.client import RunConnection
from tuidebug.wire.loop_messages import EPOCH, VALIDATION, LoopEvent
from tuidebug.wire.messages import HistoryDone


async def attach_at(run_id: str, step: int) -> RunModel:
    """A console attaching once the run passed ``step``: the supervisor's replay, up to
    HistoryDone, folded. (A first console watches the live stream for the step: every event
    the probe queued before that step's point has reached the supervisor by then.)"""
    watcher = await Console.open(run_id)
    try:
        await watcher.wait_step(step)
    finally:
        watcher.close()
    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths)
    model = RunModel()
    try:
        async with asyncio.timeout(30):
            async for batch in connection.batches():
                model.fold(batch)
                if any(isinstance(m, HistoryDone) for m in batch):
                    return model
    finally:
        connection.close()
    raise AssertionError("the replay ended without HistoryDone")


async def opened_after(run_id: str) -> RunModel:
    """A console opening the ended run: its stored history, folded."""
    paths = find_run(run_id)
    assert paths is not None
    model = RunModel()
    async for batch in StoredSource(paths).batches():
        model.fold(batch)
    return model


def chart_labels(model: RunModel) -> str:
    lines = LossChartRenderable(model.loss, width=120, height=12).render_lines(120, 12)
    return "".join(segment.text for segment in lines[-1])


def markers(model: RunModel) -> list[tuple[int, str]]:
    return [(m.step, m.label) for m in model.loss.markers]


def expected_markers(events: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The chart's markers for (step, part) events: one per step, the epoch's part first."""
    by_step: dict[int, list[str]] = {}
    for step, part in events:
        by_step.setdefault(step, []).append(part)
    return [
        (step, "+".join(sorted(parts, key=lambda p: not p.startswith("ep "))))
        for step, parts in sorted(by_step.items())
    ]


def test_lightning_epochs_and_validations_are_marked_at_lightnings_steps(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("lightning")
    from test_lightning import logged

    out = tmp_path / "out"
    # 7000 samples in batches of 1000: 7 optimizer steps an epoch; a validation every 5.
    args = ("--steps", "16", "--batch-size", "1000", "--val-every", "5", "--sleep", "0.1")
    run_id = start(DEMOS / "lightning_classifier.py", *args, "--out", str(out))
    live = asyncio.run(attach_at(run_id, 10))
    _, events = history(run_id)
    rows = logged(out)

    # Where Lightning itself says: its CSV logger's rows (step = global_step - 1).
    validations = [(int(r["step"]) + 1, float(r["val_loss"])) for r in rows if r["val_loss"]]
    epoch_of = {int(r["step"]) + 1: int(r["epoch"]) for r in rows if r["train_loss"]}
    epoch_ends = sorted(
        (max(s for s, e in epoch_of.items() if e == epoch), epoch + 1)
        for epoch in set(epoch_of.values())
    )
    assert [s for s, _ in validations] == [5, 10, 15]
    assert epoch_ends == [(7, 1), (14, 2), (16, 3)]  # the last one cut short by max_steps

    loop = [e for e in events if isinstance(e, LoopEvent)]
    assert all(e.framework == "lightning" for e in loop)
    assert [(e.step, e.epoch) for e in loop if e.kind == EPOCH] == epoch_ends
    seen = [(e.step, e.metrics["val_loss"]) for e in loop if e.kind == VALIDATION]
    assert seen == validations  # the validation's own metric, as Lightning logged it
    assert [e.epoch for e in loop if e.kind == VALIDATION] == [1, 2, 3]

    expected = expected_markers(
        [(s, f"ep {n}") for s, n in epoch_ends] + [(s, "val") for s, _ in validations]
    )
    after = asyncio.run(opened_after(run_id))
    assert markers(after) == expected
    assert after.loss.rewinds == 0
    # The console that attached after step 10 got every marker made until then, in order
    # (val@5 and ep 1@7 at least; the validation after step 10 may be there too).
    assert markers(live) == expected[: len(markers(live))] and len(markers(live)) >= 2
    labels = chart_labels(after)
    assert "ep 1@7" in labels and "val@5" in labels


def test_hf_trainer_epochs_and_evaluations_are_marked_at_the_trainers_steps(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from test_hf_trainer import log_history

    out = tmp_path / "out"
    # 64 sequences in batches of 16: 4 steps an epoch; an evaluation every 3 steps.
    args = ("--steps", "10", "--train-size", "64", "--batch-size", "16", "--eval-every", "3")
    run_id = start(DEMOS / "hf_trainer_lm.py", *args, "--out", str(out))
    _, events = history(run_id)
    logs = log_history(out)

    evaluations = [(e["step"], e["eval_loss"]) for e in logs if "eval_loss" in e]
    epoch_of = {e["step"]: math.ceil(e["epoch"] - 1e-6) for e in logs if "loss" in e}
    epoch_ends = sorted(
        (max(s for s, n in epoch_of.items() if n == epoch), epoch)
        for epoch in set(epoch_of.values())
    )
    assert epoch_ends == [(4, 1), (8, 2), (10, 3)]

    loop = [e for e in events if isinstance(e, LoopEvent)]
    assert all(e.framework == "transformers" for e in loop)
    assert [(e.step, e.epoch) for e in loop if e.kind == EPOCH] == epoch_ends
    seen = [(e.step, e.metrics["eval_loss"]) for e in loop if e.kind == VALIDATION]
    assert seen == evaluations and len(seen) >= 3
    assert not any("runtime" in key for e in loop for key in e.metrics)

    after = asyncio.run(opened_after(run_id))
    assert markers(after) == expected_markers(
        [(s, f"ep {n}") for s, n in epoch_ends] + [(s, "val") for s, _ in evaluations]
    )
