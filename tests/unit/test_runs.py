"""Run management, for real: `tuidebug ls` sizes, `tuidebug rm` and `tuidebug gc`.

Run folders are real: some made by `tuidebug run --detach` on tiny scripts (one ended, one
waiting, so live), some written by hand as ended runs with old timestamps. Sizes and "freed"
figures are checked against `du`, which counts the blocks actually allocated on disk.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import start_detached, wait_for

from tuidebug import cli
from tuidebug.paths import RunPaths, find_run, list_runs, run_paths
from tuidebug.runs import (
    NotRemovable,
    disk_usage,
    is_live,
    parse_duration,
    plan_gc,
    remove_run,
    shown_state,
)
from tuidebug.units import fmt_bytes

DAY = 86400.0


def du(path: Path) -> int:
    """Bytes on disk, by the real `du` (allocated blocks, each inode once, links not followed)."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def synthetic(
    run_id: str, *, age_days: float, state: str = "finished", payload: int = 0
) -> RunPaths:
    """An ended run's folder as the supervisor leaves it, ended ``age_days`` ago."""
    paths = run_paths(run_id)
    ended = time.time() - age_days * DAY
    gone = dead_pid()
    paths.write_meta(
        {
            "run_id": run_id,
            "script": "train.py",
            "args": ["--lr", "1e-3"],
            "created": ended - 60,
            "started": ended - 59,
            "ended": None if state == "lost" else ended,
            "state": "running" if state == "lost" else state,
            "exit_code": None if state == "lost" else 0,
            "pid": gone,
            "supervisor_pid": gone,
        }
    )
    paths.pty_log.write_bytes(os.urandom(payload))
    (paths.folder / "history.sqlite").write_bytes(b"\0" * 8192)
    return paths


def tuidebug(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The real command, in this process (its exit status, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def ls_rows(out: str) -> dict[str, list[str]]:
    """`tuidebug ls` rows by run id, cells split where the table puts 2+ spaces."""
    rows = {}
    for line in out.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", cells[0]):
            rows[cells[0]] = cells
    return rows


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # so Rich never folds the ls table


def test_durations() -> None:
    assert parse_duration("30d") == 30 * DAY
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 90 * 60
    assert parse_duration("45s") == 45
    assert parse_duration("1.5d") == 1.5 * DAY
    assert parse_duration("2w") == 14 * DAY
    for bad in ("30", "d", "3x", "-1d", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_live_run_survives_rm_and_gc_while_ended_ones_go(
    run_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    wide: None,
) -> None:
    go = tmp_path / "go"
    waits = tmp_path / "waits.py"
    waits.write_text(
        "import os, sys, time\n"
        "deadline = time.time() + 60\n"
        "while not os.path.exists(sys.argv[1]) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
    )
    tiny = tmp_path / "tiny.py"
    tiny.write_text("print('x' * 5000)\n")
    live_id = start_detached(waits.name, go.name, cwd=tmp_path)
    ended_id = start_detached(tiny.name, cwd=tmp_path)
    live, ended = find_run(live_id), find_run(ended_id)
    assert live is not None and ended is not None
    wait_for(lambda: ended.read_meta().get("ended"), what="the tiny run's end")
    wait_for(lambda: live.read_meta().get("state") == "running", what="the live run running")
    old = synthetic("20200101-000000-0001", age_days=90, payload=300_000)
    lost = synthetic("20200101-000000-0002", age_days=60, state="lost", payload=5000)
    stale = socket.socket(socket.AF_UNIX)  # the socket a killed supervisor leaves behind
    stale.bind(str(lost.socket))
    stale.close()
    assert is_live(live) and not is_live(ended) and not is_live(old) and not is_live(lost)

    # ls: each run's state, steps and loss (none here: tests/unit/test_ls.py has runs with
    # steps), age, size on disk in human units, and command.
    code, out, _ = tuidebug(capsys, "ls")
    rows = ls_rows(out)
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["run", "state", "steps", "loss", "age", "size", "command"]
    assert list(rows) == [ended_id, live_id, lost.run_id, old.run_id]  # newest first
    assert rows[live_id][1] == "running" and rows[live_id][-1] == "waits.py go"
    assert rows[ended_id][1] == "finished"
    assert rows[lost.run_id][1] == "lost"
    assert rows[ended_id][-1] == "tiny.py" and rows[ended_id][2:4] == ["—", "—"]
    assert rows[old.run_id][-1] == "train.py --lr 1e-3"
    assert rows[old.run_id][-2] == fmt_bytes(du(old.folder))
    assert rows[ended_id][-2] == fmt_bytes(du(ended.folder))

    # rm of a live run is refused, and the others named with it still go.
    ended_size = du(ended.folder)
    code, out, err = tuidebug(capsys, "rm", live_id, ended_id[:-2])  # a unique prefix works
    assert code == 1
    assert f"{live_id} is live (running): stop it first" in err
    assert f"kill {live.read_meta()['supervisor_pid']}" in err  # says how
    assert live.folder.is_dir() and live.token.exists() and live.socket.exists()
    assert not ended.folder.exists()
    assert f"removed {ended_id}  finished  tiny.py  {fmt_bytes(ended_size)}" in out

    # gc with neither age nor count to spare: only the live run is left.
    expected = du(old.folder) + du(lost.folder)
    code, out, err = tuidebug(capsys, "gc", "--older-than", "1s", "--keep", "0", "--dry-run")
    assert code == 0
    assert old.folder.exists() and lost.folder.exists()  # a dry run removes nothing
    assert f"would remove {old.run_id}" in out and f"would free {fmt_bytes(expected)}" in out
    assert live_id not in out and f"kept {live_id}: still live" in err
    code, out, err = tuidebug(capsys, "gc", "--older-than", "1s", "--keep", "0")
    assert code == 0
    assert "removed 2 run(s)" in out and f"freed {fmt_bytes(expected)}" in out
    assert f"removed {lost.run_id}  running  train.py --lr 1e-3" in out
    assert [r.run_id for r in list_runs()] == [live_id]
    assert not lost.socket.exists()  # removed with its run
    assert is_live(live) and live.history.exists()

    # Once it ends it is an ordinary ended run.
    go.write_text("")
    wait_for(lambda: live.read_meta().get("ended"), what="the live run's end")
    size = du(live.folder)
    assert remove_run(live) == size
    assert not live.folder.exists() and not live.socket.exists()


def test_gc_takes_only_runs_both_old_and_beyond_the_newest_k(
    run_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Newest first: 5 days, 40 days, 35 days, 50 days old.
    a = synthetic("20240105-000000-000a", age_days=5)
    b = synthetic("20240104-000000-000b", age_days=40)
    c = synthetic("20240103-000000-000c", age_days=35, state="crashed")
    d = synthetic("20240102-000000-000d", age_days=50, payload=20_000)
    assert plan_gc(30 * DAY, 20).remove == []  # only 4 runs: the newest 20 are kept
    assert plan_gc(30 * DAY, 1).remove == [b, c, d]
    assert plan_gc(30 * DAY, 2).remove == [c, d]
    assert plan_gc(45 * DAY, 0).remove == [d]
    assert plan_gc(60 * DAY, 0).remove == []
    assert plan_gc(parse_duration("12h"), 0).remove == [a, b, c, d]

    code, out, _ = tuidebug(capsys, "gc")  # the defaults: 30d, keep 20
    assert code == 0 and "nothing to remove (4 run(s)" in out
    sizes = {p.run_id: du(p.folder) for p in (c, d)}
    code, out, _ = tuidebug(capsys, "gc", "--keep", "2")
    assert code == 0
    for paths in (c, d):
        assert f"removed {paths.run_id}" in out and fmt_bytes(sizes[paths.run_id]) in out
        assert not paths.folder.exists()
    assert f"freed {fmt_bytes(sum(sizes.values()))}" in out
    assert [r.run_id for r in list_runs()] == [a.run_id, b.run_id]

    code, _, err = tuidebug(capsys, "gc", "--older-than", "30")
    assert code == 2 and "not a duration" in err
    code, _, err = tuidebug(capsys, "gc", "--keep", "-1")
    assert code == 2 and "not a count" in err


def test_another_users_run_and_symlinks_are_never_touched(
    run_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    if os.getuid() != 0:
        pytest.skip("chown to another uid needs root")
    theirs = synthetic("20200101-000000-7777", age_days=90, payload=4096)
    for root, dirs, files in os.walk(theirs.folder):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), 65534, 65534)
    os.chown(theirs.folder, 65534, 65534)
    # A run folder that is a symlink to a folder outside the runs folder.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "meta.json").write_text('{"state": "finished", "ended": 1.0}')
    (outside / "precious").write_bytes(b"x" * 10_000)
    linked = theirs.folder.parent / "20200101-000000-8888"
    linked.symlink_to(outside)
    # One of ours, with a symlink inside it leading out: rm unlinks the link, not its target.
    ours = synthetic("20200101-000000-9999", age_days=90, payload=1000)
    (ours.folder / "checkpoints").symlink_to(outside)
    assert disk_usage(ours.folder) == du(ours.folder)  # the link's target is not counted

    code, out, err = tuidebug(capsys, "ls")
    assert list(ls_rows(out)) == [ours.run_id]
    assert "2 folder(s)" in err and "not shown" in err

    code, out, err = tuidebug(capsys, "gc", "--older-than", "1d", "--keep", "0")
    assert code == 0
    assert f"skipped {theirs.folder}: belongs to uid 65534" in err
    assert f"skipped {linked}: is a symlink" in err
    assert f"removed {ours.run_id}" in out and "removed 1 run(s)" in out

    code, _, err = tuidebug(capsys, "rm", theirs.run_id, linked.name)
    assert code == 1
    assert f"{theirs.folder} belongs to uid 65534" in err and f"{linked} is a symlink" in err
    with pytest.raises(NotRemovable, match="belongs to uid 65534"):
        remove_run(RunPaths(theirs.run_id, theirs.folder, theirs.socket))
    assert theirs.folder.is_dir() and theirs.pty_log.stat().st_size == 4096
    assert linked.is_symlink() and (outside / "precious").read_bytes() == b"x" * 10_000
    assert not ours.folder.exists()


def test_rm_sizes_missing_ids_and_live_pids_without_a_socket(
    run_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    one = synthetic("20250101-000000-0001", age_days=1, payload=123_457)
    two = synthetic("20250102-000000-0002", age_days=1, payload=7)
    (two.folder / "hard").hardlink_to(two.pty_log)  # counted once, as du does
    sizes = {one.run_id: du(one.folder), two.run_id: du(two.folder)}
    assert disk_usage(one.folder) == sizes[one.run_id] > 123_457
    assert disk_usage(two.folder) == sizes[two.run_id]

    code, _, err = tuidebug(capsys, "rm", "20991231")
    assert code == 1 and "no run matches '20991231'" in err
    code, _, err = tuidebug(capsys, "rm", "2025")
    assert code == 1 and "'2025' matches 2 runs" in err and one.folder.exists()

    code, out, err = tuidebug(capsys, "rm", one.run_id, two.run_id, one.run_id)
    assert code == 0 and err == ""
    assert (
        f"removed {one.run_id}  finished  train.py --lr 1e-3  {fmt_bytes(sizes[one.run_id])}" in out
    )
    total = sum(sizes.values())
    assert f"removed 2 run(s), freed {fmt_bytes(total)}" in out
    assert list_runs() == []

    # A run whose supervisor was killed while its script goes on (the socket gone with
    # XDG_RUNTIME_DIR at logout): live, because a pid it recorded is alive.
    orphan = synthetic("20250103-000000-0003", age_days=90, state="lost")
    meta = orphan.read_meta()
    meta["pid"] = os.getpid()
    orphan.write_meta(meta)
    assert not orphan.socket.exists() and is_live(orphan)
    assert shown_state(orphan, orphan.read_meta()) == "running"
    code, _, err = tuidebug(capsys, "rm", orphan.run_id)
    assert code == 1 and "its script still runs without its supervisor" in err
    assert plan_gc(0, 0).live == [orphan] and plan_gc(0, 0).remove == []
    assert orphan.folder.is_dir()

    # A run being started has no pids yet (nor, for a moment, a socket): live for a while.
    starting = run_paths("20250104-000000-0004")
    starting.write_meta({"run_id": starting.run_id, "state": "starting", "created": time.time()})
    assert is_live(starting) and plan_gc(0, 0).live == [starting, orphan]
    starting.write_meta({"state": "starting", "created": time.time() - 600})
    assert not is_live(starting) and shown_state(starting, starting.read_meta()) == "lost"
