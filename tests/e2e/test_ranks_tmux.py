"""ipdb in rank 1 of a torchrun job, in the real console (tmux): pause every rank, choose
rank 1 on the ranks screen, `d` there, see rank 1's own locals at the ipdb prompt, leave it
open with Ctrl-] (the console says where it is, the ranks screen shows rank 1 in the debugger),
`d` on the dashboard goes back to it, `c`, both ranks step on; then stop the job from the
console and find the shell usable."""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import EXITED, TUIDEBUG
from support import ROOT
from test_debugging_tmux import PROMPT, ipdb
from tmux import Tmux

pytestmark = pytest.mark.e2e

DDP = ROOT / "tests" / "scripts" / "ddp_steady.py"
PAUSED_AT = re.compile(r"paused at step ([\d,]+)")


def rank_row(screen: str, rank: int) -> tuple[str, int]:
    """(state, step) of one rank's row on the ranks screen."""
    match = re.search(rf"^\W*{rank}\s+(\w[\w ]*?)\s+([\d,]+)\s", screen, re.M)
    assert match, f"no row for rank {rank}:\n{screen}"
    return match.group(1), int(match.group(2).replace(",", ""))


def squeezed(screen: str) -> str:
    """The screen's words in one line: a toast's text wraps, its rows start with a bar."""
    return " ".join(screen.replace("▌", " ").split())


def wait_words(term: Tmux, words: str, timeout: float = 8) -> str:
    """Wait for ``words`` on the screen, wrapped or not (a toast shows for 10 s)."""
    deadline = time.monotonic() + timeout
    while words not in squeezed(screen := term.screen()):
        assert time.monotonic() < deadline, f"no {words!r}:\n{screen}"
        time.sleep(0.1)
    return screen


def wait_bridged(term: Tmux) -> None:
    """Wait until the console has handed the terminal over (it left its alternate screen)."""
    deadline = time.monotonic() + 20
    while term.alternate_screen():
        assert time.monotonic() < deadline, f"no debugger bridge:\n{term.screen()}"
        time.sleep(0.1)
    time.sleep(0.3)  # the bridge puts the terminal in raw mode just after


def test_debugger_in_rank_one_while_rank_zero_stays_paused(term: Tmux) -> None:
    term.type(
        f"OMP_NUM_THREADS=1 {TUIDEBUG} run --nproc-per-node 2 {DDP} 100000 0.005; echo EXIT=$?"
    )
    term.wait_for("loss 0.", timeout=60)
    term.keys("p")
    found = PAUSED_AT.search(term.wait_for(PAUSED_AT, timeout=20))
    assert found
    held = int(found.group(1).replace(",", ""))
    term.keys("R")
    screen = term.wait_for("2 ranks", timeout=10)
    screen = term.wait_for(re.compile(r"^\W*1\s+paused", re.M), timeout=10)
    assert rank_row(screen, 0) == ("paused", held) and rank_row(screen, 1) == ("paused", held)

    term.keys("Down")  # the highlighted row: rank 1
    time.sleep(0.3)
    term.keys("d")
    term.wait_for(PROMPT, timeout=20)
    screen = ipdb(term, "p ('rank-is', rank, step, os.environ['RANK'])")
    assert f"('rank-is', 1, {held}, '1')" in screen, screen  # rank 1's own frame and process

    # Ctrl-]: the terminal back, the debugger still open in rank 1 (as for one process).
    term.keys("C-]")
    screen = term.wait_for(re.compile(r"^\W*1\s+in debugger", re.M), timeout=20)
    assert rank_row(screen, 0) == ("paused", held)  # the others stay paused
    wait_words(term, "still open in rank 1: d goes back to it")
    term.keys("Escape")
    screen = term.wait_for("back to the debugger, still open in rank 1", timeout=10)
    # n now would take rank 0 into its next all-reduce without rank 1: refused, and said.
    term.keys("n")
    screen = wait_words(term, "rank 1 is in the debugger: go on there first")
    time.sleep(0.5)
    found = PAUSED_AT.search(term.screen())
    assert found and int(found.group(1).replace(",", "")) == held, term.screen()
    term.keys("d")  # the dashboard's d: back to rank 1's debugger, not a new one in rank 0
    wait_bridged(term)
    screen = ipdb(term, "p ('back-in', rank)")
    assert "('back-in', 1)" in screen, screen

    term.type("c")  # continue: the supervisor resumes every rank
    term.wait_for(" running ", timeout=20)
    term.keys("R")  # opened a second time: it must repaint (it stayed on its first frame)
    screen = term.wait_for(re.compile(r"^\W*1\s+running", re.M), timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        screen = term.screen()
        steps = [rank_row(screen, r) for r in (0, 1)]
        if all(state == "running" and step > held + 20 for state, step in steps):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the ranks did not step on after c:\n{screen}")

    term.keys("q")
    term.wait_for("Stop the run", timeout=10)
    term.keys("s")
    screen = term.wait_for(EXITED, timeout=30)
    assert not term.alternate_screen(), "the console left the terminal in its alternate screen"
    assert "Traceback" not in screen, screen
    term.type("echo TTY=$(stty -g | head -c 40)x")  # the shell echoes and reads lines again
    term.wait_for(re.compile(r"TTY=\S+x"), timeout=10)
