"""`tuidebug run` in a real terminal (tmux), read the way a person reads it.

These are the slowest tests (each starts torch in a script), so each covers a whole story.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from e2e_helpers import EXITED, HEADER, TUIDEBUG, header_step
from support import DEMOS, ROOT, wait_for
from tmux import Tmux

from tuidebug.paths import find_run

pytestmark = pytest.mark.e2e

STEADY = ROOT / "tests" / "scripts" / "steady.py"


def terminal_is_clean(term: Tmux) -> None:
    """After the console exits: main screen back, echo and canonical mode on."""
    assert not term.alternate_screen()
    term.type("stty -a | grep -qwE -- '-icanon|-echo' && echo TTY=raw || echo TTY=cooked")
    screen = term.wait_for(re.compile(r"^TTY=\w+", re.M), timeout=10)
    assert re.search(r"^TTY=cooked", screen, re.M), screen


def test_live_loss_and_steps_advance_and_stop_leaves_a_clean_terminal(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {STEADY} 5000 0.004; echo EXIT=$?")
    screen = term.wait_for(" running ", timeout=30)
    screen = term.wait_for("loss 0.", timeout=30)
    first = header_step(screen)
    time.sleep(1.5)
    screen = term.screen()
    later = header_step(screen)
    assert later > first, f"step did not advance: {first} -> {later}"
    assert "steady.py 5000 0.004" in screen
    assert "q Quit" in screen and "? Help" in screen  # the footer shows the bindings
    assert re.search(
        r"step \d+ loss \d\.\d{5}", screen
    )  # the script's own output, in the log panel
    term.keys("q")
    term.wait_for("Stop the run")
    term.keys("s")
    screen = term.wait_for(EXITED, timeout=30)
    assert "stopped at step" in screen
    terminal_is_clean(term)


def test_leave_running_then_attach_brings_back_the_history(
    term: Tmux, run_env: dict[str, str]
) -> None:
    term.type(f"{TUIDEBUG} run {STEADY} 4000 0.005; echo EXIT=$?")
    term.wait_for("loss 0.", timeout=30)
    time.sleep(1.0)
    term.keys("q")
    term.wait_for("Leave it running")
    term.keys("l")
    screen = term.wait_for("EXIT=0", timeout=20)
    run_id = re.search(r"tuidebug attach (\S+)", screen).group(1)  # type: ignore[union-attr]
    paths = find_run(run_id)
    assert paths is not None and paths.read_meta()["state"] == "running"
    left_at = header_step(term.screen()) if HEADER.search(term.screen()) else 0

    term.type(f"clear; {TUIDEBUG} attach; echo EXIT=$?")
    screen = term.wait_for(" running ", timeout=20)
    time.sleep(0.5)
    screen = term.screen()
    assert header_step(screen) > left_at
    assert re.search(r"│\s+1\s{5,}\d+\s*│", screen), "the chart's x axis should start at step 1"

    # Kill the console outright: the run must not notice.
    console = subprocess.run(["pgrep", "-f", "tuidebug.cli attach"], capture_output=True, text=True)
    for pid in console.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    term.wait_for(EXITED, timeout=10)
    time.sleep(1.0)
    assert paths.read_meta()["state"] == "running"
    term.type("reset; clear")
    time.sleep(0.5)
    term.type(f"{TUIDEBUG} attach {run_id[:12]}; echo EXIT=$?")
    term.wait_for(" running ", timeout=20)
    term.keys("q")
    term.wait_for("Stop the run")
    term.keys("s")
    term.wait_for(EXITED, timeout=30)
    wait_for(lambda: paths.read_meta().get("state") == "stopped", what="stopped state")


def test_the_run_survives_its_terminal_closing(run_env: dict[str, str], tmp_path: Path) -> None:
    env = {**run_env, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    term = Tmux(env)
    done = tmp_path / "done"
    term.type(f"cd {ROOT}; {TUIDEBUG} run {STEADY} 600 0.005 {done}")
    term.wait_for("loss 0.", timeout=30)
    term.kill()  # SIGHUP to the console, as when an SSH connection drops
    wait_for(done.exists, timeout=60, what="the run to finish after its terminal closed")
    paths = find_run(None)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("state") == "finished", what="finished state")


def test_a_demo_with_zero_code_changes_finishes_and_says_so(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {DEMOS / 'classifier.py'} --steps 300; echo EXIT=$?")
    screen = term.wait_for("finished: 300 steps", timeout=90)
    assert "model Classifier" in screen or "Classifier" in screen
    assert "done: 300 steps" in screen
    term.keys("q")
    term.wait_for("EXIT=0", timeout=20)
    terminal_is_clean(term)


def test_a_crash_shows_the_traceback_and_exit_code(term: Tmux, tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import torch\n"
        "m = torch.nn.Linear(3, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for i in range(100):\n"
        "    loss = m(torch.randn(4, 3)).pow(2).mean()\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        "    if i == 5:\n"
        "        raise ValueError('boom at step 5')\n"
    )
    term.type(f"{TUIDEBUG} run --no-hold {script}; echo EXIT=$?")
    screen = term.wait_for("crashed with exit code 1", timeout=30)
    assert "ValueError: boom at step 5" in screen
    assert "line 8" in screen
    term.keys("q")
    term.wait_for("EXIT=1", timeout=20)
    # Held by default: the traceback shows at once, the process waits for a post-mortem.
    term.type(f"clear; {TUIDEBUG} run {script}; echo EXIT=$?")
    screen = term.wait_for("d: post-mortem debugger", timeout=30)
    assert "held" in screen and "ValueError: boom at step 5" in screen
    term.keys("q")  # lets it exit without a debugger
    term.wait_for("EXIT=1", timeout=20)


def test_bad_scripts_get_one_clear_line(term: Tmux, tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("def f(:\n    pass\n")
    (tmp_path / "early.py").write_text("import sys\nprint('loading')\nsys.exit(3)\n")
    term.type(f"{TUIDEBUG} run {tmp_path}/missing.py; echo EXIT=$?")
    screen = term.wait_for(EXITED, timeout=20)
    assert "tuidebug: no such script" in screen and "EXIT=2" in screen
    # A marker of its own per command: right after `clear` is typed, the screen may still
    # show the previous command's "EXIT=2".
    term.type(f"clear; {TUIDEBUG} run {tmp_path}/syntax.py; echo SYNTAX_EXIT=$?")
    screen = term.wait_for(re.compile(r"SYNTAX_EXIT=\d"), timeout=20)
    assert "syntax.py:1: SyntaxError" in screen and "SYNTAX_EXIT=2" in screen
    term.type(f"clear; {TUIDEBUG} run {tmp_path}/early.py; echo EARLY_EXIT=$?")
    screen = term.wait_for(re.compile(r"EARLY_EXIT=\d"), timeout=30)
    assert "exited with code 3 before its first training step" in screen
    assert "EARLY_EXIT=3" in screen
    terminal_is_clean(term)
