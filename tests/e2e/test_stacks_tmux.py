"""Where is each rank now, in the real console (tmux): `w` on a script stuck in
signal.pause(), and the rank-hang alert on the alerts screen."""

from __future__ import annotations

import time

import pytest
from e2e_helpers import EXITED, TUIDEBUG
from support import ROOT
from tmux import Tmux

pytestmark = pytest.mark.e2e

STUCK = ROOT / "tests" / "scripts" / "stuck.py"


def test_w_shows_where_the_stuck_script_is_and_a_lists_the_hang(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run --no-hold --hang-after 2 {STUCK} pause 20; echo EXIT=$?")
    term.wait_for("stuck (pause)", timeout=60)
    term.keys("w")
    screen = term.wait_for("signal.pause()", timeout=15)
    assert "1 of 1 rank(s)" in screen and "(training thread)" in screen
    assert "in wait_here_forever" in screen
    term.keys("Escape")
    time.sleep(0.5)  # Escape then a key too fast would read as alt+key
    term.keys("a")
    screen = term.wait_for("rank-hang", timeout=15)
    assert "stuck after step 20" in screen
    term.keys("Escape")
    time.sleep(0.5)
    term.wait_for("Pause/resume", timeout=10)  # the dashboard's footer
    term.keys("q")
    term.wait_for("Stop the run")
    term.keys("s")
    term.wait_for(EXITED, timeout=30)
