"""Accelerate under the real ``tuidebug run --detach`` and ``tuidebug check``, with no change to
the script.

The demo (demos/accelerate_lm.py) trains inside ``with accelerator.accumulate(model):`` with
``accelerator.backward(loss)`` and writes each optimizer step's loss, the mean of its
micro-batches' losses as it computed them, to ``OUT/losses.jsonl``: what the run's history must
show. Accelerate backpropagates ``loss / accumulation steps`` and steps the optimizer only on
the last micro-batch of each step; without the integration the history had a step too many
(the first micro-batch) and every loss divided by the accumulation steps.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from framework_runs import DEMOS, OFFLINE, history, start
from support import TUIDEBUG

from tuidebug.wire.messages import Boundary, ModelSeen

pytest.importorskip("accelerate")

DEMO = DEMOS / "accelerate_lm.py"


def logged(out: Path) -> dict[int, float]:
    """The script's own loss of each optimizer step, by step."""
    lines = (out / "losses.jsonl").read_text().splitlines()
    return {row["step"]: row["loss"] for row in map(json.loads, lines)}


@pytest.mark.parametrize(("accumulate", "steps"), [(2, 12), (1, 6)])
def test_steps_are_optimizer_steps_and_the_loss_is_the_scripts(
    run_env: dict[str, str], tmp_path: Path, accumulate: int, steps: int
) -> None:
    out = tmp_path / "out"
    run_id = start(DEMO, "--steps", str(steps), "--accumulate", str(accumulate), "--out", out)
    points, events = history(run_id)
    expected = logged(out)
    assert sorted(expected) == list(range(1, steps + 1))
    # One point per real optimizer step (accumulate batches each), numbered as the script does.
    assert sorted(points) == sorted(expected)
    for step, point in points.items():
        # The mean of the step's micro-batch losses, not Accelerate's loss / accumulate.
        assert point.loss == pytest.approx(expected[step], rel=1e-6), step
    (boundary,) = [e for e in events if isinstance(e, Boundary)]
    assert boundary.source == "optimizer"
    assert [m.class_name for m in events if isinstance(m, ModelSeen)] == ["TinyLM"]


def test_tuidebug_check_is_clean_on_the_demo(run_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TUIDEBUG, "check", "--json", "--steps", "40", str(DEMO), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **OFFLINE},  # run_env's folders are in os.environ
    )
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["script_exit_code"] == 0, report["script_error"]
    assert report["alerts"] == []
    assert proc.returncode == 0
