"""Hugging Face's Trainer under the real ``tuidebug run --detach``, with no change to the script.

The demo (demos/hf_trainer_lm.py) trains a 2-layer GPT-2 built from a config (nothing is
downloaded: HF_HUB_OFFLINE=1) and writes the Trainer's own ``log_history``, which is what the
run's history must show.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from framework_runs import DEMOS, OFFLINE, Console, finished, history, plain, start
from support import TUIDEBUG

from tuidebug.wire.checkpoint_messages import CheckpointSaved
from tuidebug.wire.messages import Boundary, ModelSeen, OptimizerSeen, Paused, Resumed

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

DEMO = DEMOS / "hf_trainer_lm.py"


def log_history(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "log_history.json").read_text())


def test_steps_loss_and_logs_are_the_trainers_own(run_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_id = start(
        DEMO, "--steps", "12", "--accumulate", "2", "--eval-every", "5", "--out", str(out)
    )
    points, events = history(run_id)
    logs = log_history(out)
    train = {e["step"]: e for e in logs if "loss" in e}
    evals = {e["step"]: e["eval_loss"] for e in logs if "eval_loss" in e}
    assert sorted(points) == sorted(train) == list(range(1, 13))  # optimizer steps, not batches
    for step, point in points.items():
        # The Trainer logs every step (logging_steps=1): its loss, the micro-batches' mean.
        assert point.loss == train[step]["loss"], step
        assert point.scalars["learning_rate"] == train[step]["learning_rate"], step
        assert point.scalars["grad_norm"] == train[step]["grad_norm"], step
    assert sorted(evals) == [5, 10, 12]  # every 5 steps and at the end
    with_eval = {s: p.scalars["eval_loss"] for s, p in points.items() if "eval_loss" in p.scalars}
    assert with_eval == evals  # reported with their own step: the step waits for its logs
    assert not any("runtime" in key for p in points.values() for key in p.scalars)
    (boundary,) = [e for e in events if isinstance(e, Boundary)]
    assert boundary.source == "hook"
    assert [m.class_name for m in events if isinstance(m, ModelSeen)] == ["GPT2LMHeadModel"]
    assert "AdamW" in [o.class_name for o in events if isinstance(o, OptimizerSeen)]


def test_pause_step_and_save_now_write_a_checkpoint_the_trainer_resumes(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_id = start(
        DEMO, "--steps", "400", "--sleep", "0.03", "--eval-every", "0", "--out", str(out)
    )

    async def drive() -> tuple[int, int, CheckpointSaved]:
        console = await Console.open(run_id)
        try:
            await console.wait_step(3)
            console.send("pause")
            paused = await console.wait(lambda m: isinstance(m, Paused))
            assert isinstance(paused, Paused)
            assert paused.where.startswith(str(DEMO)), paused.where  # the trainer.train line
            console.send("step")
            await console.wait(lambda m: isinstance(m, Resumed))
            again = await console.wait(lambda m: isinstance(m, Paused))
            assert isinstance(again, Paused)
            console.send("ckpt-save")  # the Trainer saves once the run goes on
            console.send("resume")
            saved = await console.wait(lambda m: isinstance(m, CheckpointSaved))
            assert isinstance(saved, CheckpointSaved)
            console.send("stop-run")
            return paused.step, again.step, saved
        finally:
            console.close()

    first, second, saved = asyncio.run(drive())
    assert second == first + 1
    assert saved.ok, saved.error
    # The Trainer's own folder for the step the save was asked at.
    assert saved.step == second and Path(saved.path) == out / f"checkpoint-{second}"
    state = json.loads((out / f"checkpoint-{second}" / "trainer_state.json").read_text())
    assert state["global_step"] == second and saved.size > 0
    # The Trainer itself resumes from it (resume_from_checkpoint=): on from that step.
    again_out = tmp_path / "again"
    resumed = plain(
        DEMO,
        "--steps",
        str(second + 3),
        "--eval-every",
        "0",
        "--resume",
        saved.path,
        "--out",
        str(again_out),
    )
    assert f"done: {second + 3} steps" in finished(resumed)
    steps = [e["step"] for e in log_history(again_out) if "loss" in e]
    # The history goes on from the checkpoint's own (trainer_state.json), which it carries.
    assert steps[-3:] == [second + 1, second + 2, second + 3]
    assert steps[:-3] == [e["step"] for e in state["log_history"] if "loss" in e]


def test_tuidebug_check_is_clean_on_the_demo(run_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TUIDEBUG, "check", "--steps", "60", str(DEMO), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **OFFLINE},  # run_env's folders are in os.environ
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
