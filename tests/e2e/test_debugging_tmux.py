"""Pause, step, ipdb in the live run, post-mortem and break conditions, in a real terminal."""

from __future__ import annotations

import os
import re
import time

import psutil
import pytest
from e2e_helpers import TUIDEBUG, header_step
from support import ROOT
from tmux import Tmux

from tuidebug.paths import find_run

pytestmark = pytest.mark.e2e

DEBUG_ME = ROOT / "tests" / "scripts" / "debug_me.py"
PROMPT = re.compile(r"^ipdb> ?$", re.M)


def ipdb(term: Tmux, line: str) -> str:
    """Type a line at the ipdb prompt and return the screen once the next prompt shows."""
    before = len(PROMPT.findall(term.screen()))
    term.type(line)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        screen = term.screen()
        prompted = len(PROMPT.findall(screen)) > before or screen.rstrip().endswith("ipdb>")
        if prompted and line in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"no prompt after {line!r}:\n{term.screen()}")


def test_pause_step_debug_assign_continue(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {DEBUG_ME} 1500 0.005; echo EXIT=$?")
    term.wait_for("loss 0.", timeout=30)
    term.keys("p")
    screen = term.wait_for("paused at step", timeout=10)
    held = header_step(screen)
    pid = find_run(None).read_meta()["pid"]  # type: ignore[union-attr]
    process = psutil.Process(pid)
    cpu_before = sum(process.cpu_times()[:2])
    time.sleep(2.0)
    assert header_step(term.screen()) == held, "the step moved while paused"
    assert sum(process.cpu_times()[:2]) - cpu_before < 0.2, "a paused run burned CPU"
    assert "debug_me.py:" in term.screen()  # where: the user's own line

    term.keys("n")
    term.wait_for(f"step {held + 1:,} ", timeout=10)
    time.sleep(0.5)
    assert header_step(term.screen()) == held + 1

    term.keys("d")
    term.wait_for(PROMPT, timeout=20)
    screen = ipdb(term, "loss.item()")
    assert re.search(r"loss\.item\(\)\n\d+\.\d+", screen)
    screen = ipdb(term, "model.training")
    assert "model.training\nTrue" in screen
    screen = ipdb(term, "lt batch")
    assert "tensor[64x8] float32 cpu" in screen
    ipdb(term, "marker = 'changed in ipdb'")
    term.type("c")
    screen = term.wait_for("finished: 1,500 steps", timeout=60)
    assert "marker: changed in ipdb" in screen, screen
    term.keys("q")
    term.wait_for("EXIT=0", timeout=20)


def test_post_mortem_at_the_failing_line(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run {DEBUG_ME} 100 0.01 5; echo EXIT=$?")
    screen = term.wait_for("d: post-mortem debugger", timeout=30)
    assert "ValueError: boom at step 5" in screen
    term.keys("d")
    screen = term.wait_for(PROMPT, timeout=20)
    assert re.search(r"-+> \d+\s+raise ValueError", screen), screen
    screen = ipdb(term, "p step")
    assert "p step\n5" in screen
    term.type("q")
    term.wait_for("crashed with exit code 1", timeout=20)
    term.keys("q")
    term.wait_for("EXIT=1", timeout=20)


def test_break_on_stops_at_the_first_step_where_it_holds(term: Tmux) -> None:
    term.type(f"{TUIDEBUG} run --break-on 'step == 37' {DEBUG_ME} 80 0.005; echo EXIT=$?")
    screen = term.wait_for("paused at step 37", timeout=30)
    assert "step == 37" in screen and header_step(screen) == 37
    term.keys("g")
    term.wait_for("Run to step")
    term.type("60")
    screen = term.wait_for("paused at step 60", timeout=20)
    assert "running to step 60" in screen or header_step(screen) == 60
    term.keys("b")
    term.wait_for("Pause when")
    term.type("loss > 1000000")
    term.wait_for("break on: loss > 1000000", timeout=10)  # the probe's notice: prompt closed
    term.keys("r")
    term.wait_for("finished: 80 steps", timeout=30)
    term.keys("q")
    term.wait_for("EXIT=0", timeout=20)


def test_debugging_after_leaving_and_attaching_again_at_80x24(run_env: dict[str, str]) -> None:
    env = {**run_env, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    term = Tmux(env, cols=80, rows=24)
    try:
        term.type(f"cd {ROOT}; {TUIDEBUG} run {DEBUG_ME} 4000 0.005; echo EXIT=$?")
        term.wait_for("loss 0.", timeout=30)
        term.keys("q")
        term.wait_for("Leave it running")
        term.keys("l")
        term.wait_for("EXIT=0", timeout=20)
        term.type(f"clear; {TUIDEBUG} attach; echo EXIT=$?")
        term.wait_for(" running ", timeout=20)
        term.keys("p")
        term.wait_for("paused at step", timeout=10)
        term.keys("d")
        term.wait_for(PROMPT, timeout=20)
        screen = ipdb(term, "p step")
        assert re.search(r"p step\n\d+", screen)
        term.type("c")
        term.wait_for(" running ", timeout=20)
        term.keys("q")
        term.wait_for("Stop the run")
        term.keys("s")
        term.wait_for("EXIT=130", timeout=30)
    finally:
        term.kill()
