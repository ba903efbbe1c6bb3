"""`tuidebug run --compare RUN` in a real terminal: the other run's loss on the live chart, a
legend naming both runs, and the `v` picker listing the stored run with its steps."""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import HEADER, TUIDEBUG, header_step
from support import ROOT, start_detached, wait_for
from tmux import Tmux

from tuidebug.paths import find_run

pytestmark = pytest.mark.e2e

STEADY = ROOT / "tests" / "scripts" / "steady.py"


def test_run_compare_shows_the_legend_and_v_lists_the_stored_run(
    term: Tmux, run_env: dict[str, str]
) -> None:
    before = start_detached(STEADY, "40")  # the run to compare with, a real one
    paths = find_run(before)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("ended"), what="the first run's end")

    term.resize(150, 34)  # room in the chart's legend for both runs' names
    term.type(f"{TUIDEBUG} run --compare {before} {STEADY} 100000 0.01; echo EXIT=$?")
    screen = term.wait_for(re.compile(rf"━━ vs {before} steady\.py"), timeout=40)
    live = find_run(None)  # the newest run: the one this console watches
    assert live is not None and live.run_id != before
    screen = term.wait_for(re.compile(rf"━━ {live.run_id} steady\.py\s+━━ vs {before}"), timeout=15)
    screen = term.wait_for(HEADER, timeout=30)
    assert header_step(screen) >= 1  # the live run goes on under the overlay

    term.keys("v")
    screen = term.wait_for("Compare the loss with another run", timeout=10)
    assert re.search(rf"{before}\s*│?\s*finished\s*│?\s*40\s", screen), screen
    assert f"no comparison (now: {before})" in screen
    term.keys("Escape")
    # The picker gone (and a pause: Escape then a key too fast reads as alt+key).
    wait_for(lambda: "Compare the loss with" not in term.screen(), timeout=10, what="no picker")
    time.sleep(0.5)
    term.keys("q")
    term.wait_for("Stop the run", timeout=10)
    term.keys("s")
    term.wait_for("EXIT=", timeout=30)
