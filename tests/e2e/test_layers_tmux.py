"""The layers screen in a real terminal: live rows, and the jump to where a NaN was born."""

from __future__ import annotations

import re

import pytest
from e2e_helpers import TUIDEBUG
from support import ROOT
from tmux import Tmux

pytestmark = pytest.mark.e2e

STEADY = ROOT / "tests" / "scripts" / "steady.py"
NAN_DATA = ROOT / "tests" / "scripts" / "layers_nan_data.py"


def test_layers_screen_shows_modules_with_shapes_and_statistics(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run --stats-every 5 {STEADY} 3000 0.005; echo EXIT=$?")
    term.wait_for("loss 0.", timeout=30)
    term.keys("L")
    screen = term.wait_for("64×16", timeout=20)  # the first Linear's output shape
    assert re.search(r"^\s+0\s+Linear\s+144\s+64×16\s+float32\s+cpu", screen, re.M), screen
    assert re.search(r"^\s+2\s+Linear\s+17\s+64×1\s", screen, re.M)
    term.keys("escape")
    term.wait_for(" running ", timeout=10)
    term.keys("q")
    term.wait_for("Stop the run")
    term.keys("s")
    term.wait_for("EXIT=130", timeout=30)


def test_a_nan_pauses_the_run_and_opens_the_layers_screen_on_its_module(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {NAN_DATA} 400 40 forward; echo EXIT=$?")
    screen = term.wait_for("NaN/Inf at step 40 in model.feature", timeout=40)
    assert "locating" not in screen
    term.keys("escape")
    screen = term.wait_for("paused at step 40", timeout=10)
    term.keys("q")
    term.wait_for("Stop the run")
    term.keys("s")
    term.wait_for(re.compile(r"EXIT=\d+"), timeout=30)
