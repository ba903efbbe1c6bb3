"""Checkpoints in a real terminal: open the browser, save now, see the file, restore it, and
see the run's step go back."""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import HEADER, TUIDEBUG, header_step
from support import ROOT
from tmux import Tmux

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "tests" / "scripts" / "ckpt_steady.py"
SAVED = re.compile(r"step-(\d{8})\.pt")


def test_save_now_then_restore_sets_the_step_back(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {SCRIPT} 100000 0.01; echo EXIT=$?")
    term.wait_for(HEADER, timeout=30)
    term.keys("c")
    term.wait_for("Checkpoints", timeout=10)
    term.keys("s")
    screen = term.wait_for(SAVED, timeout=15)
    saved = int(SAVED.search(screen).group(1))  # type: ignore[union-attr]
    term.wait_for(f"{saved:,}  ", timeout=15)  # listed in the table (not only the toast)
    time.sleep(1.5)  # the run goes on past the saved step

    term.keys("r")
    term.wait_for("Restore step-", timeout=10)
    term.keys("y")
    term.wait_for(f"now at step {saved:,}", timeout=15)
    time.sleep(0.5)
    term.keys("escape")
    went_back = re.compile(r"restored step-\d+\.pt: step ([\d,]+) → ([\d,]+)")
    screen = term.wait_for(went_back, timeout=10)  # the dashboard's checkpoint line
    time.sleep(0.5)  # Escape then q too fast would read as alt+q
    # Back on the dashboard: the step went back to the checkpoint's and goes on from there.
    went = went_back.search(screen)
    assert went, screen
    before, after = (int(g.replace(",", "")) for g in went.groups())
    assert after == saved < before
    assert header_step(screen) < before, screen

    term.keys("q")
    term.wait_for("Stop the run", timeout=10)
    term.keys("s")
    term.wait_for("EXIT=", timeout=30)
