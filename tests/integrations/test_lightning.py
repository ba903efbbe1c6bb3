"""Lightning under the real ``tuidebug run --detach``, with no change to the script.

The demo (demos/lightning_classifier.py) calls ``Trainer.fit`` and nothing of tuidebug; its
own CSV logger writes what ``self.log`` logged, which is what the run's history must show.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
from pathlib import Path

import pytest
from framework_runs import DEMOS, OFFLINE, Console, finished, history, plain, start
from support import TUIDEBUG

from tuidebug.wire.checkpoint_messages import CheckpointSaved
from tuidebug.wire.messages import Boundary, ModelSeen, Paused, Resumed

pytest.importorskip("lightning")

DEMO = DEMOS / "lightning_classifier.py"


def logged(out: Path) -> list[dict[str, str]]:
    """Lightning's own metrics.csv: one row per logging call (step = global_step - 1)."""
    with open(out / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def train_losses(rows: list[dict[str, str]]) -> dict[int, float]:
    """``train_loss`` as logged, by the console's step number (Lightning's global_step)."""
    return {int(r["step"]) + 1: float(r["train_loss"]) for r in rows if r["train_loss"]}


def test_steps_loss_and_logged_metrics_are_lightnings_own(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    run_id = start(DEMO, "--steps", "24", "--val-every", "10", "--out", str(tmp_path / "out"))
    points, events = history(run_id)
    rows = logged(tmp_path / "out")
    assert sorted(points) == list(range(1, 25))
    expected = train_losses(rows)
    assert sorted(expected) == list(range(1, 25))
    for step, point in points.items():
        # One optimizer step per batch: the step's loss is the one training_step logged.
        assert point.loss == expected[step], step
        assert point.scalars["train_loss"] == expected[step], step
        assert 0.0 <= point.scalars["train_acc"] <= 1.0
    # A validation after batch 10 and 20: its metrics come with the next step, once each.
    validations = [(int(r["step"]) + 1, float(r["val_loss"])) for r in rows if r["val_loss"]]
    assert [s for s, _ in validations] == [10, 20]
    with_val = {s: p.scalars["val_loss"] for s, p in points.items() if "val_loss" in p.scalars}
    assert with_val == {s + 1: v for s, v in validations}
    (boundary,) = [e for e in events if isinstance(e, Boundary)]
    assert boundary.source == "hook"  # the callback's steps, not the optimizer's
    models = [e for e in events if isinstance(e, ModelSeen)]
    assert [m.class_name for m in models] == ["Classifier"]


def test_accumulated_batches_make_one_step_with_their_mean_loss(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "ck"
    run_id = start(
        *("--save-every", "3", "--checkpoint-dir", str(folder)),
        *(
            DEMO,
            "--steps",
            "6",
            "--accumulate",
            "2",
            "--val-every",
            "0",
            "--out",
            str(tmp_path / "a"),
        ),
    )
    # The same first batch without accumulation: its loss is micro-batch 1 of the run above
    # (same weights, data and dropout draws before any update).
    single = plain(DEMO, "--steps", "1", "--val-every", "0", "--out", str(tmp_path / "b"))
    points, events = history(run_id)
    finished(single)
    assert sorted(points) == list(range(1, 7))  # 12 batches, 6 optimizer steps
    accumulated = train_losses(logged(tmp_path / "a"))  # Lightning logs the last micro-batch
    assert sorted(accumulated) == list(range(1, 7))
    first = train_losses(logged(tmp_path / "b"))[1]
    second = accumulated[1]
    assert points[1].loss == pytest.approx((first + second) / 2, rel=1e-6)
    assert points[1].loss != pytest.approx(second, rel=1e-4)
    # --save-every counts optimizer steps and saves through trainer.save_checkpoint too.
    saves = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [(s.step, s.reason, s.ok) for s in saves] == [(3, "every", True), (6, "every", True)]
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch=0-step=3.ckpt",
        "epoch=0-step=6.ckpt",
    ]


def test_pause_step_and_save_now_write_a_ckpt_that_lightning_resumes(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    run_id = start(DEMO, "--steps", "400", "--sleep", "0.02", "--out", str(tmp_path / "out"))

    async def drive() -> tuple[int, int, CheckpointSaved]:
        console = await Console.open(run_id)
        try:
            await console.wait_step(3)
            console.send("pause")
            paused = await console.wait(lambda m: isinstance(m, Paused))
            assert isinstance(paused, Paused)
            assert paused.where.startswith(str(DEMO)), paused.where  # the trainer.fit line
            console.send("step")  # one more optimizer step, then paused again
            await console.wait(lambda m: isinstance(m, Resumed))
            again = await console.wait(lambda m: isinstance(m, Paused))
            assert isinstance(again, Paused)
            console.send("ckpt-save")
            saved = await console.wait(lambda m: isinstance(m, CheckpointSaved))
            assert isinstance(saved, CheckpointSaved)
            console.send("stop-run")
            return paused.step, again.step, saved
        finally:
            console.close()

    first, second, saved = asyncio.run(drive())
    assert second == first + 1
    assert saved.ok, saved.error
    assert saved.step == second
    path = Path(saved.path)
    assert path.name == f"epoch=0-step={second}.ckpt" and path.stat().st_size == saved.size
    # Lightning itself resumes from it (ckpt_path=): training goes on from that global step.
    resumed = plain(
        DEMO, "--steps", str(second + 3), "--resume", str(path), "--out", str(tmp_path / "r")
    )
    out = finished(resumed)
    assert f"done: {second + 3} steps" in out
    assert sorted(train_losses(logged(tmp_path / "r"))) == [second + 1, second + 2, second + 3]


def test_tuidebug_check_is_clean_on_the_demo(run_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TUIDEBUG, "check", "--steps", "60", str(DEMO), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **OFFLINE},  # run_env's folders are in os.environ
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
