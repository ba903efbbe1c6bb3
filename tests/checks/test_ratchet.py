"""The ratchet (``tuidebug check --baseline RUN``): this run's loss curve against a stored run's.

The comparison itself on hand-made curves (smoothing, tolerance, where the curves diverge, NaN);
then the real thing: a stored ``tuidebug check`` run of demos/classifier.py as the baseline, the
same run again (passes: +0.0 %), and the same script with its learning rate x10 (fails, exit 1,
one line on stderr naming the divergence step).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from tests.support import DEMOS, ROOT, TUIDEBUG
from tuidebug.checks.ratchet import DEFAULT_TOLERANCE, compare, smoothed
from tuidebug.wire.messages import StepPoint


def curve(losses: list[float]) -> list[StepPoint]:
    return [StepPoint(i + 1, float(i), loss, {}) for i, loss in enumerate(losses)]


def test_smoothing_is_a_trailing_mean() -> None:
    assert smoothed([(1, 1.0), (2, 3.0), (3, 5.0)], window=2) == {1: 1.0, 2: 2.0, 3: 4.0}


def test_noise_alone_does_not_fail_but_a_worse_end_does() -> None:
    base = [2.0 * math.exp(-i / 30) + 0.3 for i in range(100)]
    # +-15 % batch-to-batch noise, alternating: averages out over the 10-step window.
    noisy = [v * (1.15 if i % 2 else 0.85) for i, v in enumerate(base)]
    assert compare(curve(noisy), curve(base), "b", DEFAULT_TOLERANCE).ok
    worse = [v * (1.0 if i < 50 else 1.3) for i, v in enumerate(base)]
    verdict = compare(curve(worse), curve(base), "b", DEFAULT_TOLERANCE)
    assert not verdict.ok
    # The 10-step mean passes 10 % once 4 of its 10 steps are 30 % worse: step 54 (1-based).
    assert verdict.diverges_at == 54
    assert "diverge from step 54" in verdict.reason
    better = [v * 0.5 for v in base]
    assert compare(curve(better), curve(base), "b", DEFAULT_TOLERANCE).ok


def test_only_common_steps_count_and_nan_is_worse() -> None:
    base = curve([1.0] * 20)
    assert compare(curve([1.0] * 50), base, "b", 0.1).end_step == 20
    nan_run = curve([1.0] * 10 + [math.nan] * 10)
    verdict = compare(nan_run, base, "b", 0.1)
    assert not verdict.ok and verdict.diverges_at == 11
    far = [StepPoint(100 + i, 0.0, 1.0, {}) for i in range(5)]
    assert not compare(far, base, "b", 0.1).ok  # nothing in common: cannot say it is as good


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUIDEBUG, "check", "--json", "--fail-on", "error", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def test_ratchet_on_real_runs() -> None:
    script = str(DEMOS / "classifier.py")
    first = check(script, "--steps", "60")
    assert first.returncode == 0, first.stderr
    baseline = json.loads(first.stdout)["run_id"]

    same = check("--baseline", baseline, script, "--steps", "60")
    assert same.returncode == 0, same.stderr
    ratchet = json.loads(same.stdout)["ratchet"]
    assert ratchet["ok"] and ratchet["common_steps"] == 60 and abs(ratchet["gap"]) < 0.02

    # lr x10 (3e-3 -> 3e-2): the loss ends well above the baseline's.
    hot = check("--baseline", baseline, script, "--steps", "60", "--lr", "0.03")
    assert hot.returncode == 1, hot.stderr
    report = json.loads(hot.stdout)
    assert report["status"] == "expectations-failed"
    assert not report["ratchet"]["ok"] and report["ratchet"]["gap"] > 0.1
    lines = [line for line in hot.stderr.splitlines() if "ratchet failed" in line]
    assert len(lines) == 1 and "curves diverge from step" in lines[0], hot.stderr

    missing = check("--baseline", "no-such-run-id", script, "--steps", "5")
    assert missing.returncode == 2 and "names no run" in missing.stderr


def test_a_corrupt_baseline_is_refused_in_one_line(tmp_path: Path) -> None:
    """A broken history.sqlite (a truncated copy, another file) fails before the run starts,
    with one line naming the run and no traceback."""
    folder = tmp_path / "20261130-000000-dead"
    folder.mkdir()
    (folder / "history.sqlite").write_bytes(b"not a database, a broken copy " * 200)
    proc = check("--baseline", str(folder), str(DEMOS / "classifier.py"), "--steps", "5")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "20261130-000000-dead: its history cannot be read" in lines[0]
