"""The step-time bar and a profiler capture in the real console (tmux), on a script whose
DataLoader is deliberately slow."""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import EXITED, TUIDEBUG
from support import ROOT, wait_for
from tmux import Tmux

pytestmark = pytest.mark.e2e

SLOW_DATA = ROOT / "tests" / "scripts" / "slow_data.py"
FIGURE = re.compile(r"(data|fwd|bwd|opt|other) \d+\.?\d* m?s (\d+)%")


def test_the_bar_shows_data_wait_and_p_c_profiles_the_next_steps(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {SLOW_DATA} 3000 0.03; echo EXIT=$?")
    # The bar: the step time, the phases by name in it, and their figures, data the largest
    # once the first steps' dense layer sampling has left the recent window.
    term.wait_for(re.compile(r"step \d+\.\d+ ms .*data"), timeout=60)

    def data_is_largest() -> bool:
        screen = term.screen()
        shares = {m[1]: int(m[2]) for m in FIGURE.finditer(screen)}
        return len(shares) == 5 and max(shares, key=lambda k: shares[k]) == "data"

    wait_for(data_is_largest, timeout=60, interval=0.5, what="data wait as the largest share")
    term.keys("P")
    term.wait_for("c: profile the next 5 steps", timeout=10)
    term.keys("c")
    screen = term.wait_for(re.compile(r"steps \d+-\d+: .* s captured"), timeout=90)
    assert "aten::" in screen and "profile-" in screen
    assert re.search(r"step \d+: \d+\.\d+ ms\s+\(data \d+\.\d+", screen), screen
    term.keys("Escape")
    time.sleep(0.5)  # Escape then q too fast would read as alt+q
    term.wait_for("Pause/resume", timeout=10)  # the dashboard's footer
    term.keys("q")
    term.wait_for("Stop the run")
    term.keys("s")
    term.wait_for(EXITED, timeout=30)
