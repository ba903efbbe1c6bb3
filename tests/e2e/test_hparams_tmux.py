"""Live hyperparameters in a real terminal: pause, open the h screen, set the lr and a tunable,
see the change on screen and on the loss chart, run one step and see the script itself print
the new values (and record them, step by step, in a file this test reads)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from e2e_helpers import HEADER, TUIDEBUG
from support import ROOT
from tmux import Tmux

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "tests" / "scripts" / "hparams_steady.py"
CHANGED = re.compile(r"lr ([\d.e-]+) -> 0\.0005 \(optimizer\) at step ([\d,]+)")


def _replace_value(term: Tmux, value: str) -> None:
    """In the prompt: clear the current value (home, kill to the end), type it, see it typed
    (the keys reached the input, not the screen below), Enter."""
    # Keys sent in one burst right after the prompt is drawn were seen lost now and then: the
    # prompt is drawn a moment before its input has the focus. A person types slower.
    for keys in (["C-a"], ["C-k"], ["-l", value]):
        time.sleep(0.3)
        term.keys(*keys)
    term.wait_for(re.compile(rf"▏?{re.escape(value)}\s"), timeout=10)
    term.keys("Enter")


def test_set_the_lr_and_a_tunable_from_the_console(term: Tmux, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    term.type(f"{TUIDEBUG} run {SCRIPT} 100000 0.02 {record}; echo EXIT=$?")
    term.wait_for(HEADER, timeout=30)
    time.sleep(1.5)  # some history first: the marker's label needs room beside the axis labels
    term.keys("p")
    term.wait_for("paused", timeout=10)
    term.keys("h")
    term.wait_for("optimizer (SGD)", timeout=10)
    term.keys("Enter")
    term.wait_for("lr of optimizer (SGD), group 0", timeout=10)
    _replace_value(term, "0.0005")
    screen = term.wait_for(CHANGED, timeout=15)  # the screen's list of changes
    found = CHANGED.search(screen)
    assert found, screen
    step = int(found.group(2).replace(",", ""))
    assert "ExponentialLR base lrs scaled" in screen
    term.wait_for(re.compile(r"optimizer \(SGD\)\s+│?\s*0\s+│?\s*0\.0005"), timeout=10)

    term.keys("Tab")
    term.keys("Enter")
    term.wait_for("a float (default 0.1)", timeout=10)  # the prompt's hint
    _replace_value(term, "0.3")
    term.wait_for("dropout 0.1 -> 0.3", timeout=15)

    term.keys("Escape")
    time.sleep(0.5)  # Escape then a key too fast would read as alt+key
    term.keys("n")  # one more step, then paused again: the script prints what it used
    term.wait_for(re.compile(rf"hp {step + 1} 0\.0005 \S+ 0\.3"), timeout=15)  # output pane

    lines = [line.split() for line in record.read_text().splitlines()]
    by_step = {int(fields[1]): fields for fields in lines}
    assert float(by_step[step][2]) == pytest.approx(0.1 * 0.99 ** (step - 1), rel=1e-12)
    assert by_step[step][4] == "0.1"
    assert by_step[step + 1][2:] == ["0.0005", by_step[step + 1][3], "0.3"]
    assert step + 2 not in by_step  # paused after exactly one step

    term.keys("p")  # resume: with steps after it, the marker's label has room under the chart
    term.wait_for(f"lr=0.0005@{step}", timeout=15)
    term.keys("q")
    term.wait_for("Stop the run", timeout=10)
    term.keys("s")
    term.wait_for("EXIT=", timeout=30)
