"""The Lightning demo in the real console, in a real terminal: Lightning's steps and logged
values on the dashboard, its progress bar in the output panel, save now writing a ``.ckpt``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from e2e_helpers import HEADER, TUIDEBUG, header_step
from support import ROOT
from tmux import Tmux

pytestmark = pytest.mark.e2e
pytest.importorskip("lightning")

DEMO = ROOT / "demos" / "lightning_classifier.py"
SAVED = re.compile(r"epoch=0-step=(\d+)\.ckpt")
BAR = re.compile(r"Epoch 0\S* .*\d+/109 ")  # Rich's bar (TQDM's without rich): batch N of 109


def test_lightning_run_in_the_console(term: Tmux, tmp_path: Path) -> None:
    term.type(
        f"NO_COLOR=1 {TUIDEBUG} run {DEMO} --steps 5000 --sleep 0.02 --out {tmp_path}; echo EXIT=$?"
    )
    screen = term.wait_for(HEADER, timeout=60)
    screen = term.wait_for("train_loss", timeout=30)  # self.log's values are the scalars
    assert header_step(screen) >= 1

    term.keys("o")  # the script's output: Lightning's own progress bar
    term.wait_for(BAR, timeout=20)
    time.sleep(0.5)  # Escape then a key too fast would read as alt+key
    term.keys("escape")
    time.sleep(0.5)

    term.keys("c")
    term.wait_for("Checkpoints", timeout=10)
    term.keys("s")
    screen = term.wait_for(SAVED, timeout=20)  # trainer.save_checkpoint's file, listed
    assert int(SAVED.search(screen).group(1)) >= 1  # type: ignore[union-attr]
    time.sleep(0.5)
    term.keys("escape")
    time.sleep(0.5)

    term.keys("q")
    term.wait_for("Stop the run", timeout=10)
    term.keys("s")
    term.wait_for("EXIT=", timeout=30)
