"""`tuidebug ls` shows enough to choose a run: state, last step, final loss, age, size and the
command, in 80 columns.

The runs are real (`tuidebug run --detach`): a short training run (its final loss is checked
against what the script itself printed), and a script that exits with code 3 before any step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import ROOT, start_detached, wait_for
from test_runs import ls_rows, tuidebug

from tuidebug.paths import find_run
from tuidebug.runs import RunSummary

STEADY = ROOT / "tests" / "scripts" / "steady.py"
COLUMNS = ["run", "state", "steps", "loss", "age", "size", "command"]


def test_ls_columns_fit_80_and_say_steps_and_final_loss(
    run_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A long argument (the done file's path) makes the command too long for 80 columns.
    done = tmp_path / ("done-file-with-a-rather-long-name-" + "x" * 30)
    trained = start_detached(STEADY, "30", "0", str(done))
    exits = tmp_path / "exits.py"
    exits.write_text("raise SystemExit(3)\n")
    crashed = start_detached(exits.name, cwd=tmp_path)
    for run_id in (trained, crashed):
        paths = find_run(run_id)
        assert paths is not None
        wait_for(lambda p=paths: p.read_meta().get("ended"), what=f"the end of {run_id}")
    paths = find_run(trained)
    assert paths is not None
    printed = re.findall(r"step 30 loss (\d+\.\d+)", paths.pty_log.read_text())
    assert printed, paths.pty_log.read_text()

    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = tuidebug(capsys, "ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == COLUMNS
    assert max(len(line) for line in lines) <= 80, out
    rows = ls_rows(out)
    assert list(rows) == [crashed, trained]  # newest first
    run = rows[trained]
    assert run[1:3] == ["finished", "30"]
    assert float(run[3]) == pytest.approx(float(printed[0]), rel=1e-3)  # 4 significant digits
    assert run[4].endswith("s")  # started seconds ago
    # The script's folder went first, then the end of the arguments.
    assert run[-1].startswith("steady.py 30 0") and run[-1].endswith("…"), run
    assert rows[crashed][1:4] == ["crashed 3", "—", "—"]
    assert rows[crashed][-1] == "exits.py"

    monkeypatch.setenv("COLUMNS", "250")  # wide enough: the whole command, as given
    _, out, _ = tuidebug(capsys, "ls")
    assert ls_rows(out)[trained][-1] == f"{STEADY} 30 0 {done}"


def test_age_is_one_unit_and_the_command_fits() -> None:
    def summary(started: float | None, script: str = "train.py", *args: str) -> RunSummary:
        return RunSummary("r", "finished", script, args, started, 0, None, None)

    now = 1_800_000_000.0
    ages = [summary(now - s).age(now) for s in (5, 90, 3 * 3600 + 5, 2 * 86400, 15 * 86400)]
    assert ages == ["5s", "1m", "3h", "2d", "2w"]
    assert summary(None).age(now) == "?"
    long = summary(now, "/very/long/path/to/train.py", "--lr", "0.001", "--epochs", "10")
    assert long.command_fit(100) == "/very/long/path/to/train.py --lr 0.001 --epochs 10"
    assert long.command_fit(31) == "train.py --lr 0.001 --epochs 10"
    assert long.command_fit(20) == "train.py --lr 0.001…"
