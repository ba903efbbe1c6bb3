"""The bundled demos run as plain scripts, without tuidebug, and their loss goes down.

Each demo runs as a real subprocess (``python demos/x.py --steps N``), the way a user would run
it before trying ``tuidebug run``; the test reads its stdout the way a terminal would have to:
carriage-return progress bars, ANSI colour, a "done:" line at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMOS = ROOT / "demos"

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FULL_LINE = re.compile(r"^step\s+(\d+)/(\d+)\s+loss\s+([0-9.]+)\s+lr\s+([0-9.e+-]+)", re.M)
DONE = re.compile(r"^done: (\d+) steps, final loss ([0-9.]+)$", re.M)


def run_demo(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``demos/<name>`` from a neutral directory and return its raw stdout."""
    proc = subprocess.run(
        [sys.executable, str(DEMOS / name), *args],
        capture_output=True,  # bytes: text mode would turn every "\r" into "\n"
        timeout=60,
        cwd=ROOT.parent,
        env={**os.environ, **(env or {})},
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{stderr[-3000:]}"
    return proc.stdout.decode()


def screen_lines(raw: str) -> list[str]:
    """What a terminal would end up showing: ANSI stripped, each line after its last ``\\r``."""
    text = ANSI.sub("", raw)
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


# Step counts chosen so that each run takes a few seconds at most and the loss has clearly fallen.
CASES = [
    ("classifier.py", 60),
    ("transformer_lm.py", 60),
    ("handwritten_sgd.py", 200),
    ("with_hook.py", 60),
]


@pytest.mark.parametrize(("name", "steps"), CASES, ids=[name for name, _ in CASES])
def test_demo_runs_and_learns(name: str, steps: int) -> None:
    raw = run_demo(name, "--steps", str(steps), "--seed", "0")
    assert "\r" in raw, "the progress bar is rewritten in place with carriage returns"
    assert "\x1b[32m" in raw, "the summary line is coloured"
    lines = screen_lines(raw)
    text = "\n".join(lines)

    done = DONE.findall(text)
    assert len(done) == 1, f"expected one done: line in\n{text}"
    assert lines[-1] == "" and lines[-2].startswith("done:"), "done: must be the last line"
    done_steps, final_loss = int(done[0][0]), float(done[0][1])
    assert done_steps == steps

    logged = FULL_LINE.findall(text)
    assert logged, f"no progress lines in\n{text}"
    assert int(logged[0][0]) == 1 and int(logged[-1][0]) == steps
    first_loss = float(logged[0][2])
    assert final_loss < first_loss * 0.9, f"loss did not fall: {first_loss} -> {final_loss}"


def test_no_color_is_respected() -> None:
    raw = run_demo("handwritten_sgd.py", "--steps", "20", env={"NO_COLOR": "1"})
    assert "\x1b[32m" not in raw and "\x1b[1m" not in raw


def test_seed_makes_runs_identical() -> None:
    def losses(seed: str) -> list[str]:
        raw = run_demo("classifier.py", "--steps", "50", "--seed", seed, "--eval-every", "25")
        return re.findall(r"loss ([0-9.]+)", ANSI.sub("", raw))

    first = losses("3")
    assert len(first) > 10
    assert losses("3") == first
    assert losses("4") != first


def test_demos_do_not_import_tuidebug() -> None:
    """Only with_hook.py may mention tuidebug in code; the rest must run without it."""
    for path in DEMOS.glob("*.py"):
        if path.name == "with_hook.py":
            continue
        code = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+tuidebug", code, re.M), path.name
