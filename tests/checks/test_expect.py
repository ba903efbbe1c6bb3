"""``tuidebug check --expect``: the guide's ML test in CI (checks/expect.py).

The parser and the judge on real step points; then the real ``tuidebug check`` (a supervisor,
the probe, the stored history) with expectations from the command line and from
``[tool.tuidebug]``, failing with exit code 1 and a one-line reason.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, TUIDEBUG
from tuidebug.checks.expect import TAIL, ExpectationError, judge, parse_expectation
from tuidebug.wire.messages import StepPoint


def points(losses: list[float], **scalars: dict[int, float]) -> list[StepPoint]:
    return [
        StepPoint(
            step,
            0.0,
            loss,
            {name: by_step[step] for name, by_step in scalars.items() if step in by_step},
        )
        for step, loss in enumerate(losses, start=1)
    ]


def test_parse_forms() -> None:
    assert parse_expectation("loss < 0.5").op == "<"
    at = parse_expectation(" loss@100 <= 1.2 ")
    assert (at.name, at.step, at.op, at.value) == ("loss", 100, "<=", 1.2)
    assert parse_expectation("val_loss<1.0").name == "val_loss"
    assert parse_expectation("loss decreases").op == "decreases"
    assert parse_expectation("train/acc@50 > 0.9").name == "train/acc"


@pytest.mark.parametrize(
    "text",
    [
        "loss",
        "loss < ",
        "loss < abc",
        "__import__('os') < 1",
        "step > 3",
        "loss nonfinite",
        "1 < 2",
    ],
)
def test_parse_refuses_what_is_not_an_expectation(text: str) -> None:
    with pytest.raises(ExpectationError):
        parse_expectation(text)


def test_end_value_is_the_mean_of_the_last_steps() -> None:
    losses = [2.0] * 20 + [0.1] * (TAIL - 1) + [5.0]  # one noisy last batch
    verdict = judge(parse_expectation("loss < 0.7"), points(losses))
    assert verdict.ok and verdict.value == pytest.approx((0.1 * (TAIL - 1) + 5.0) / TAIL)
    assert f"mean of steps {len(losses) - TAIL + 1}-{len(losses)}" in verdict.reason
    assert not judge(parse_expectation("loss < 0.5"), points(losses)).ok


def test_at_step_decreases_and_scalars() -> None:
    run = points([3.0 - 0.01 * i for i in range(200)], val_loss={50: 1.4, 100: 0.9, 150: 0.8})
    assert judge(parse_expectation("loss@100 < 2.1"), run).ok
    assert not judge(parse_expectation("loss@100 < 2.0"), run).ok
    assert judge(parse_expectation("loss decreases"), run).ok
    assert not judge(
        parse_expectation("loss decreases"), points([1.0 + 0.01 * i for i in range(40)])
    ).ok
    val = judge(parse_expectation("val_loss < 1.0"), run)  # the last logged value
    assert val.ok and val.value == 0.8 and "step 150" in val.reason
    assert judge(parse_expectation("val_loss@120 < 1.0"), run).value == 0.9
    assert judge(parse_expectation("val_loss decreases"), run).ok
    missing = judge(parse_expectation("acc > 0.5"), run)
    assert not missing.ok and "never logged" in missing.reason
    short = judge(parse_expectation("loss@500 < 9"), run)
    assert not short.ok and "ended at step 200" in short.reason


def test_nan_fails_every_comparison() -> None:
    run = points([1.0] * 5 + [math.nan] * 10)
    assert not judge(parse_expectation("loss < 10"), run).ok
    assert not judge(parse_expectation("loss > 0"), run).ok
    assert not judge(parse_expectation("loss decreases"), run).ok


# --- through the real `tuidebug check` --------------------------------------------------------

SCRIPT = """\
import argparse
import torch
import tuidebug
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
args = parser.parse_args()
torch.manual_seed(0)
x = torch.randn(512, 8)
y = (x[:, :2].sum(dim=1) > 0).long()
# Held-out rows for val_loss (evaluating on training rows is train-eval-overlap), from their own
# generator: the training draws stay those of the seed.
val_x = torch.randn(128, 8, generator=torch.Generator().manual_seed(1))
val_y = (val_x[:, :2].sum(dim=1) > 0).long()
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
dbg = tuidebug.attach(model, optimizer)
for step in range(1, 1000):
    idx = torch.randint(0, 512, (64,))
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
    loss.backward()
    optimizer.step()
    scalars = {}
    if step % 20 == 0:
        with torch.no_grad():
            scalars["val_loss"] = nn.functional.cross_entropy(model(val_x), val_y)
    dbg.step(loss=loss, **scalars)
"""


def check(script: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUIDEBUG, "check", *options, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def test_check_expectations_pass_and_fail(run_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    proc = check(
        script,
        "--json",
        "--steps",
        "100",
        "--expect",
        "loss < 0.3",
        "--expect",
        "loss decreases",
        "--expect",
        "val_loss < 0.3",
        "--expect",
        "loss@20 < 0.01",
    )
    report = json.loads(proc.stdout)
    verdicts = {v["expect"]: v for v in report["expectations"]}
    assert [verdicts[e]["ok"] for e in ("loss < 0.3", "loss decreases", "val_loss < 0.3")] == [
        True,
        True,
        True,
    ], verdicts
    assert not verdicts["loss@20 < 0.01"]["ok"]
    assert proc.returncode == 1 and report["status"] == "expectations-failed"
    failed = [line for line in proc.stderr.splitlines() if "expectation failed" in line]
    assert failed == [f"tuidebug: expectation failed: {verdicts['loss@20 < 0.01']['reason']}"]
    assert "loss = " in failed[0] and "(step 20)" in failed[0]


def test_pyproject_expectations_and_the_text_report(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tuidebug]\nexpect = ["loss < 0.3", "loss decreases"]\n'
    )
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    good = check(script, "--steps", "100")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "expect ok" in good.stdout and "clean" in good.stdout
    # A learning rate of zero: the loss stays where it started.
    bad = subprocess.run(
        [
            *TUIDEBUG,
            "check",
            "--steps",
            "60",
            "--ignore",
            "lr-zero",
            "--ignore",
            "loss-flat",
            str(script),
            "--lr",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "expectations not met" in bad.stdout
    reasons = [line for line in bad.stderr.splitlines() if "expectation failed" in line]
    assert len(reasons) == 2 and "loss decreases" in reasons[1]


def test_a_bad_expectation_is_refused_before_the_run(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    proc = check(script, "--expect", "loss << 1")
    assert proc.returncode == 2 and "not an expectation" in proc.stderr
