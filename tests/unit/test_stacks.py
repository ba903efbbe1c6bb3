"""Where is each rank now: stacks from the probe's I/O thread or faulthandler, `tuidebug stacks`,
and the hang alert, on real runs (tests/scripts/stuck.py) and on the pieces themselves."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest
from support import ROOT, TUIDEBUG, start_detached, wait_for

from tuidebug.paths import RunPaths, find_run
from tuidebug.probe.stacks import collect
from tuidebug.supervisor.extensions.hang import HangWatch, hang_alert, waits_on_purpose
from tuidebug.supervisor.stacks import parse_faulthandler
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire import codec
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.client import RunConnection
from tuidebug.wire.messages import (
    Command,
    HistoryDone,
    Message,
    Notice,
    Paused,
    Resumed,
    StepPoint,
    Steps,
)
from tuidebug.wire.stack_messages import MAX_FRAMES, Frame, Stacks, ThreadStack, stacks_text

STUCK = ROOT / "tests" / "scripts" / "stuck.py"


# --- the pieces ----------------------------------------------------------------------------------


class _Loud:
    """A local whose repr must never run: reading a stack touches no user object."""

    def __repr__(self) -> str:
        raise AssertionError("a local's repr ran")


def _blocked_here(started: threading.Event, release: threading.Event) -> None:
    secret = _Loud()  # noqa: F841 - a local the walk must not touch
    started.set()
    release.wait(10)


def _deep(n: int, started: threading.Event, release: threading.Event) -> None:
    if n:
        _deep(n - 1, started, release)
    else:
        started.set()
        release.wait(10)


def test_collect_reads_every_other_thread_innermost_frame_last() -> None:
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_blocked_here, args=(started, release), name="worker-x")
    worker.start()
    started.wait(5)
    try:
        stacks = collect(rank=3, request="r1", step=7)
    finally:
        release.set()
        worker.join()
    assert (stacks.rank, stacks.request, stacks.step, stacks.pid) == (3, "r1", 7, os.getpid())
    names = {t.name: t for t in stacks.threads}
    thread = names["worker-x"]
    assert not thread.training
    functions = [f.function for f in thread.frames]
    assert functions[-3:] == ["_blocked_here", "Event.wait", "Condition.wait"]
    here = next(f for f in thread.frames if f.function == "_blocked_here")
    assert here.code == "release.wait(10)" and here.file == __file__
    # The caller's own thread (here the main one, in a probe the I/O thread) is left out.
    assert threading.main_thread().ident not in {t.ident for t in stacks.threads}
    # It travels: a msgpack round trip gives the same stacks.
    (back,) = codec.FrameDecoder().feed(codec.encode(stacks))
    assert back == stacks


def test_a_deep_stack_keeps_its_innermost_frames_and_counts_the_rest() -> None:
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_deep, args=(MAX_FRAMES + 40, started, release), name="deep")
    worker.start()
    started.wait(5)
    try:
        stacks = collect(rank=0, request="")
    finally:
        release.set()
        worker.join()
    thread = next(t for t in stacks.threads if t.name == "deep")
    assert len(thread.frames) == MAX_FRAMES and thread.omitted > 40
    assert [f.function for f in thread.frames[-2:]] == ["Event.wait", "Condition.wait"]
    text = stacks_text(stacks)
    assert f"... {thread.omitted} outer frame(s) not shown" in text


def test_parse_a_real_faulthandler_dump() -> None:
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_blocked_here, args=(started, release))
    worker.start()
    started.wait(5)
    with tempfile.TemporaryFile("w+") as dump:
        try:
            faulthandler.dump_traceback(dump, all_threads=True)
        finally:
            release.set()
            worker.join()
        dump.seek(0)
        text = dump.read()
    main = threading.main_thread().ident or 0
    threads = parse_faulthandler(text, main)
    assert len(threads) >= 2
    training = next(t for t in threads if t.training)
    assert training.ident == main and training.name == "MainThread"
    assert training.frames[-1].function == "test_parse_a_real_faulthandler_dump"
    other = next(t for t in threads if t.ident == worker.ident)
    # faulthandler says most recent first; the stacks run outermost first.
    fns = [f.function for f in other.frames]
    assert "_blocked_here" in fns and fns.index("_blocked_here") > fns.index("_bootstrap")
    here = next(f for f in other.frames if f.function == "_blocked_here")
    assert here.code == "release.wait(10)"  # the source line, read in the supervisor


def _steps(rank: int, first: int, last: int, t0: float, dt: float) -> Steps:
    points = [StepPoint(s, t0 + (s - first) * dt) for s in range(first, last + 1)]
    return Steps(rank=rank, step=last, points=points)


def test_hang_watch_threshold_pauses_and_the_ranks_behind() -> None:
    watch = HangWatch(None)
    assert not watch.due(1e6)  # before the first step, never
    assert watch.threshold() == 300.0
    watch.on_message(_steps(0, 1, 50, 0.0, 30.0), now=0.0)  # 30 s steps
    watch.on_message(_steps(1, 1, 49, 0.0, 30.0), now=0.0)
    assert watch.threshold() == pytest.approx(600.0)  # 20 x the median step time
    assert not watch.due(599.0) and watch.due(601.0)
    assert watch.behind([0, 1]) == [1]
    watch.on_message(Paused(rank=0, step=50, reason="console"), now=10.0)
    assert not watch.due(5000.0)  # a paused rank: the others wait on purpose
    watch.on_message(Resumed(rank=0, step=50), now=5000.0)
    assert not watch.due(5300.0) and watch.due(5601.0)  # the silence counts from the resume

    fixed = HangWatch(0.2)
    assert fixed.threshold() == 1.0  # the floor
    fixed.on_message(_steps(0, 1, 3, 0.0, 0.01), now=0.0)
    assert fixed.due(1.5)
    fixed.alerted_at = 0.0
    assert not fixed.due(3.0)  # once per hang
    assert fixed.on_message(_steps(0, 4, 4, 3.0, 0.01), now=3.0)  # steps flow: cleared
    assert not fixed.due(3.5) and fixed.due(4.1)


def _stack(rank: int, frames: list[Frame]) -> Stacks:
    thread = ThreadStack(name="MainThread", ident=1, training=True, frames=frames)
    return Stacks(rank=rank, pid=10 + rank, threads=[thread])


def test_the_alert_names_the_ranks_behind_with_their_stacks() -> None:
    watch = HangWatch(3)
    watch.on_message(_steps(0, 1, 42, 0.0, 0.1), now=0.0)
    watch.on_message(_steps(1, 1, 41, 0.0, 0.1), now=0.0)
    stuck = [
        Frame("/w/train.py", 30, "train", "dist.all_reduce(t)"),
        Frame("/w/c10d.py", 9, "wait"),
    ]
    stacks = {
        0: _stack(0, [Frame("/w/train.py", 35, "train", "dist.barrier()")]),
        1: _stack(1, stuck),
    }
    alert = hang_alert(watch, [0, 1], stacks, silent=12.0)
    assert alert.rule == "rank-hang" and alert.severity == "error" and alert.rank == 1
    assert alert.step == 41 and alert.place == "rank 1"
    assert "rank 1 behind at step 41 (the others at 42)" in alert.message
    assert "rank 1 in wait (c10d.py:9)" in alert.message
    assert "dist.all_reduce(t)" in alert.evidence and "rank 1 (pid 11)" in alert.evidence
    assert "dist.barrier" not in alert.evidence  # only the ranks behind
    # A training thread inside a debugger (a bare pdb.set_trace) waits on purpose.
    pdb = [Frame("/w/train.py", 3, "train"), Frame("/usr/lib/python3.11/bdb.py", 90, "dispatch")]
    assert waits_on_purpose(_stack(0, pdb)) and not waits_on_purpose(stacks[1])


# --- real runs -----------------------------------------------------------------------------------


def _stacks_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUIDEBUG, "stacks", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def _wait_for_output(run_id: str, text: str, timeout: float = 60) -> None:
    paths = find_run(run_id)
    assert paths is not None
    wait_for(lambda: text.encode() in paths.pty_log.read_bytes(), timeout, what=repr(text))


async def _watch(
    run_id: str, seconds: float, commands: list[tuple[float, Command]]
) -> list[Message]:
    """What a console gets in ``seconds`` of live stream, sending each command at its time."""
    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths, history=False)
    got: list[Message] = []

    async def read() -> None:
        async for batch in connection.batches():
            got.extend(batch)

    reader = asyncio.create_task(read())
    started = time.monotonic()
    for at, command in commands:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        connection.send(command)
    await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
    reader.cancel()
    connection.close()
    return got


def _kill(run_id: str) -> None:
    paths = find_run(run_id)
    assert paths is not None
    meta = paths.read_meta()
    for key in ("pid", "supervisor_pid"):
        pid = meta.get(key)
        if isinstance(pid, int) and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _recorded(run_id: str) -> list[Message]:
    """What a console attaching now is sent before the live stream (the run's history, from its
    supervisor or, once it ended, from its folder)."""
    from tuidebug.console.sources import open_source

    paths = find_run(run_id)
    assert paths is not None

    async def history() -> list[Message]:
        source = await open_source(paths)
        got: list[Message] = []
        async for batch in source.batches():
            got += batch
            if any(isinstance(m, HistoryDone) for m in batch):
                break
        source.close()
        return got

    return asyncio.run(history())


def _hang_alerts(run_id: str) -> list[Alert]:
    return [m for m in _recorded(run_id) if isinstance(m, Alert) and m.rule == "rank-hang"]


def test_stacks_of_a_script_in_signal_pause_and_its_hang_alert(run_env: dict[str, str]) -> None:
    run_id = start_detached("--hang-after", "2", str(STUCK), "pause", "15")
    try:
        _wait_for_output(run_id, "stuck (pause)")
        done = _stacks_cli(run_id[:12])
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert out.startswith("rank 0 (pid ")
        assert "via faulthandler" not in out  # signal.pause() releases the GIL: Python answered
        training = out[out.index("(training thread)") :]
        training = training.split("\nThread ")[0]
        assert "in wait_here_forever" in training and "signal.pause()" in training
        assert training.rstrip().endswith("signal.pause()")  # innermost frame last
        assert "in train" in training
        alerts = wait_for(lambda: _hang_alerts(run_id), 20, 0.5, what="the hang alert")
        assert len(alerts) == 1
        alert = alerts[0]
        assert alert.step == 15 and alert.place == "rank 0"
        assert "wait_here_forever (stuck.py:" in alert.message
        assert "signal.pause()" in alert.evidence
    finally:
        _kill(run_id)


def test_a_script_holding_the_gil_is_dumped_by_faulthandler(run_env: dict[str, str]) -> None:
    run_id = start_detached("--hang-after", "2", str(STUCK), "gil", "5")
    try:
        _wait_for_output(run_id, "stuck (gil)")
        done = _stacks_cli()  # the newest live run
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "via faulthandler" in out and "did not answer" in out
        training = out[out.index("(training thread)") :].split("\nThread ")[0]
        assert "in wait_here_forever" in training and "sum(range(10**15))" in training
        alerts = wait_for(lambda: _hang_alerts(run_id), 20, 0.5, what="the hang alert")
        assert "via faulthandler" in alerts[0].evidence
        assert "sum(range(10**15))" in alerts[0].evidence
        # The supervisor dies: the script runs on, and `tuidebug stacks` says why it cannot ask.
        paths = find_run(run_id)
        assert paths is not None
        os.kill(paths.read_meta()["supervisor_pid"], signal.SIGKILL)
        gone = _stacks_cli(run_id)
        assert gone.returncode == 1 and "not reachable" in gone.stderr, gone.stderr
    finally:
        _kill(run_id)


def test_no_alert_for_a_steady_run_nor_a_paused_one_and_none_for_an_ended_run(
    run_env: dict[str, str],
) -> None:
    run_id = start_detached("--hang-after", "2", str(STUCK), "steady", "0", "0.05")
    try:
        paths = find_run(run_id)
        assert paths is not None
        wait_for(lambda: _stored_steps(paths) >= 10, 60, 0.2, what="the first steps")
        got = asyncio.run(
            _watch(
                run_id,
                7.5,
                [(1.0, Command(name="pause", rank=-1)), (4.5, Command(name="resume", rank=-1))],
            )
        )
        kinds = [type(m).__name__ for m in got]
        assert "Paused" in kinds and "Resumed" in kinds
        assert not [m for m in got if isinstance(m, Alert) and m.rule == "rank-hang"]
        assert not [m for m in got if isinstance(m, Notice) and "rank-hang" in m.text]
        steps = [p.step for m in got if isinstance(m, Steps) for p in m.points]
        # It stepped before and after the 3.5 s pause (past --hang-after), and went on for 3 s.
        assert steps and max(steps) > 20
    finally:
        asyncio.run(_watch(run_id, 0.3, [(0.0, Command(name="stop-run", rank=-1))]))
    wait_for(lambda: find_run(run_id).read_meta().get("ended"), 30, what="end")  # type: ignore[union-attr]
    ended = _stacks_cli(run_id)
    assert ended.returncode == 1 and "is over (stopped)" in ended.stderr
    newest = _stacks_cli()  # without a RUN: the newest live run, and there is none
    assert newest.returncode == 2 and "no live run" in newest.stderr


def _stored_steps(paths: RunPaths) -> int:
    if not paths.history.exists():
        return 0
    store = HistoryStore(paths.history, readonly=True)
    try:
        return store.count_steps()
    finally:
        store.close()


def test_a_stall_raises_one_alert_and_steps_flowing_again_clear_it(run_env: dict[str, str]) -> None:
    run_id = start_detached("--hang-after", "2", str(STUCK), "stall", "10")
    paths = find_run(run_id)
    assert paths is not None
    try:
        wait_for(lambda: paths.read_meta().get("ended"), 90, 0.2, what="the run's end")
    finally:
        _kill(run_id)
    alerts = _hang_alerts(run_id)  # the history of an ended run: what a console is sent
    assert len(alerts) == 1 and alerts[0].step == 10  # one alert for the 5 s stall
    assert "time.sleep(5)" in alerts[0].evidence
    notices = [m.text for m in _recorded(run_id) if isinstance(m, Notice)]
    assert "rank-hang: steps flow again" in notices


def test_no_alert_while_the_script_sits_in_its_own_pdb(run_env: dict[str, str]) -> None:
    run_id = start_detached("--hang-after", "2", str(STUCK), "pdb", "10")
    try:
        _wait_for_output(run_id, "(Pdb)")
        done = _stacks_cli(run_id)
        assert done.returncode == 0 and "pdb.py" in done.stdout  # in the debugger, and it says so
        time.sleep(5.0)  # 2 s of limit, 2 s for the stacks, and a margin
        assert _hang_alerts(run_id) == []
    finally:
        _kill(run_id)
