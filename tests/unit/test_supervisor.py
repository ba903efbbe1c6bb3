"""The supervisor, for real: detached runs, several consoles, hostile clients, crashes.

Every test starts a real `tuidebug run --detach` (a supervisor process, a script on a pty, the
probe in it) and talks to it over its real Unix socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, start_detached, wait_for

from tuidebug.paths import find_run
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire import codec
from tuidebug.wire.client import ConnectError, RunConnection
from tuidebug.wire.messages import Command, Hello, HistoryDone, Reject, RunInfo, Steps

STEADY = ROOT / "tests" / "scripts" / "steady.py"


def ended_meta(run_id: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    paths = find_run(run_id)
    assert paths is not None
    return wait_for(lambda: (m := paths.read_meta()).get("ended") and m, timeout, what="run end")


async def collect(run_id: str, until_end: bool = True) -> tuple[list[int], int]:
    """Steps a console receives (history, then live) until the run ends; and the history size."""
    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths)
    seen: list[int] = []
    history = -1
    async for batch in connection.batches():
        for message in batch:
            if isinstance(message, Steps):
                seen += [p.step for p in message.points]
            elif isinstance(message, HistoryDone):
                history = message.steps
                if not until_end:
                    connection.close()
                    return seen, history
            elif isinstance(message, RunInfo) and message.ended is not None and until_end:
                connection.close()
                return seen, history
    return seen, history


def test_detached_run_records_history_output_and_metadata(run_env: dict[str, str]) -> None:
    run_id = start_detached(STEADY, "30")
    meta = ended_meta(run_id)
    assert meta["state"] == "finished" and meta["exit_code"] == 0
    paths = find_run(run_id)
    assert paths is not None
    store = HistoryStore(paths.history, readonly=True)
    assert store.count_steps() == 30
    store.close()
    assert b"step 30 loss" in paths.pty_log.read_bytes()


def test_private_files_and_socket(run_env: dict[str, str]) -> None:
    run_id = start_detached(STEADY, "400", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(paths.socket.exists, what="socket")
    assert stat.S_IMODE(paths.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.token.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.folder.stat().st_mode) == 0o700
    asyncio.run(_stop(run_id))
    assert ended_meta(run_id)["state"] == "stopped"


async def _stop(run_id: str) -> None:
    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths)
    connection.send(Command(name="stop-run", rank=-1))
    await asyncio.sleep(0.2)
    connection.close()


def test_consoles_attaching_at_any_time_get_every_step_once(run_env: dict[str, str]) -> None:
    run_id = start_detached(STEADY, "150", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(paths.socket.exists, what="socket")

    async def two_consoles() -> list[tuple[list[int], int]]:
        first = asyncio.create_task(collect(run_id))
        while _stored_steps(paths.history) < 20:  # the second console attaches mid-run
            await asyncio.sleep(0.1)
        second = asyncio.create_task(collect(run_id))
        return await asyncio.gather(first, second)

    (a, _), (b, b_history) = asyncio.run(two_consoles())
    assert a == list(range(1, 151))
    assert b == list(range(1, 151))
    assert 0 < b_history < 150  # part came from the stored history, part live


def _stored_steps(history: Path) -> int:
    if not history.exists():
        return 0
    store = HistoryStore(history, readonly=True)
    try:
        return store.count_steps()
    finally:
        store.close()


def raw_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.close()


def test_hostile_clients_lose_only_their_own_connection(run_env: dict[str, str]) -> None:
    run_id = start_detached(STEADY, "200", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(paths.socket.exists, what="socket")
    token = paths.token.read_text()

    garbage = raw_connect(paths.socket)
    garbage.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
    assert closed_by_server(garbage)

    huge = raw_connect(paths.socket)
    huge.sendall(struct.pack(">I", 2**31))
    assert closed_by_server(huge)

    wrong = raw_connect(paths.socket)
    wrong.sendall(codec.encode(Hello(role="console", token="not-the-token")))
    reply = codec.FrameDecoder().feed(wrong.recv(65536))
    assert isinstance(reply[0], Reject)
    assert closed_by_server(wrong)

    # A good console after a valid handshake that then sends garbage is dropped too.
    rogue = raw_connect(paths.socket)
    rogue.sendall(codec.encode(Hello(role="console", token=token)))
    rogue.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    assert closed_by_server(rogue)

    steps, _ = asyncio.run(collect(run_id))
    assert steps == list(range(1, 201))  # the run and a well-behaved console were untouched
    assert ended_meta(run_id)["state"] == "finished"


def test_a_console_with_a_stolen_path_but_no_token_is_refused(run_env: dict[str, str]) -> None:
    run_id = start_detached(STEADY, "300", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(paths.socket.exists, what="socket")
    paths.token.write_text("guessed")
    with pytest.raises(ConnectError, match="refused"):
        asyncio.run(RunConnection.open(paths))


def test_probe_without_a_supervisor_trains_quietly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TUIDEBUG_SOCKET": str(tmp_path / "gone.sock"),
        "TUIDEBUG_TOKEN_FILE": str(tmp_path / "t"),
    }
    (tmp_path / "t").write_text("x")
    done = tmp_path / "done"
    proc = subprocess.run(
        [sys.executable, "-m", "tuidebug.probe.bootstrap", str(STEADY), "20", "0", str(done)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "running without the console" in proc.stderr
    assert done.read_text() == "20"


def test_the_run_survives_its_supervisor_being_killed(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    done = tmp_path / "done"
    run_id = start_detached(STEADY, "200", "0.01", str(done))
    paths = find_run(run_id)
    assert paths is not None
    meta = wait_for(
        lambda: (m := paths.read_meta()).get("state") == "running" and m, what="running"
    )
    os.kill(meta["supervisor_pid"], signal.SIGKILL)
    wait_for(done.exists, timeout=60, what="the script to finish without its supervisor")
    assert done.read_text() == "200"
    assert b"done" in paths.pty_log.read_bytes()  # output went on into the run's log


def test_the_script_sees_its_own_argv_name_cwd_and_environment(
    run_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "where.py"
    script.write_text(
        "import os, sys, json, torch\n"
        "print(json.dumps({'argv': sys.argv, 'name': __name__, 'cwd': os.getcwd(),\n"
        "    'path0': sys.path[0], 'mine': os.environ.get('MY_SETTING'),\n"
        "    'probe_vars': sorted(k for k in os.environ if k.startswith('TUIDEBUG_'))}))\n"
        "m = torch.nn.Linear(2, 1); o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "m(torch.ones(1, 2)).sum().backward(); o.step()\n"
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.setenv("MY_SETTING", "kept")
    run_id = start_detached(script, "--flag", "value with space", cwd=workdir)
    assert ended_meta(run_id)["state"] == "finished"
    paths = find_run(run_id)
    assert paths is not None
    import json

    line = next(x for x in paths.pty_log.read_text().splitlines() if x.startswith("{"))
    seen = json.loads(line)
    assert seen["argv"] == [str(script), "--flag", "value with space"]
    assert seen["name"] == "__main__"
    assert seen["cwd"] == str(workdir)
    assert seen["path0"] == str(tmp_path)
    assert seen["mine"] == "kept"
    # Only the variables the user set: the probe's own are taken out before the script runs.
    assert seen["probe_vars"] == sorted(k for k in run_env)


def test_several_probes_report_their_own_ranks(run_env: dict[str, str]) -> None:
    from tuidebug.probe.link import Link
    from tuidebug.wire.messages import StepPoint

    run_id = start_detached(STEADY, "400", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("state") == "running", what="running")

    async def rank_one_seen() -> set[int]:
        connection = await RunConnection.open(paths)
        link = Link.connect(paths.socket, paths.token.read_text(), 1, 2, lambda command: None)
        for step in range(1, 6):
            link.push_point(StepPoint(step, 0.0, 1.0 / step, {}))
        assert not link.idle()  # queued until the link's next batch
        for _ in range(300):
            if link.idle():
                break
            await asyncio.sleep(0.01)
        assert link.idle()  # sent within a batch interval (50 ms)
        ranks: set[int] = set()
        async for batch in connection.batches():
            ranks |= {m.rank for m in batch if isinstance(m, Steps) and m.points}
            if {0, 1} <= ranks:
                break
        link.close()
        connection.send(Command(name="stop-run", rank=-1))
        await asyncio.sleep(0.2)
        connection.close()
        return ranks

    assert asyncio.run(asyncio.wait_for(rank_one_seen(), 30)) == {0, 1}


def test_a_late_console_gets_every_stored_event_and_only_the_latest_of_the_rest(
    run_env: dict[str, str],
) -> None:
    from tuidebug.wire.layer_messages import LayerStats, LayerTable

    run_id = start_detached(STEADY, "400", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(lambda: _stored_steps(paths.history) > 100, what="steps stored")

    async def attach() -> list[object]:
        connection = await RunConnection.open(paths)
        got: list[object] = []
        async for batch in connection.batches():
            for message in batch:
                if isinstance(message, HistoryDone):
                    break  # live messages may follow in the same batch: not history
                got.append(message)
            else:
                continue
            break
        connection.send(Command(name="stop-run", rank=-1))
        await asyncio.sleep(0.2)
        connection.close()
        return got

    got = asyncio.run(attach())
    assert sum(isinstance(m, LayerTable) for m in got) == 1  # retention "all": stored
    assert sum(isinstance(m, LayerStats) for m in got) == 1  # retention "latest": the newest


def test_links_send_less_often_while_no_console_watches(run_env: dict[str, str]) -> None:
    from tuidebug.probe.link import FLUSH_INTERVAL, UNWATCHED_FLUSH_INTERVAL, Link
    from tuidebug.wire.messages import LINK_PACE

    run_id = start_detached(STEADY, "2000", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("state") == "running", what="running")
    commands: list[Command] = []
    link = Link.connect(paths.socket, paths.token.read_text(), 1, 2, commands.append)

    async def watch() -> None:
        # Nobody attached: the supervisor slows the new probe's link down at its hello.
        wait_for(lambda: link.interval == UNWATCHED_FLUSH_INTERVAL, 10, what="slow pace")
        console = await RunConnection.open(paths)
        for _ in range(500):
            if link.interval == FLUSH_INTERVAL:
                break
            await asyncio.sleep(0.01)
        assert link.interval == FLUSH_INTERVAL  # a console came: 20 batches a second
        # The pace is the supervisor's to set: a console's attempt is not relayed.
        console.send(Command(name=LINK_PACE, rank=-1, args={"watched": "0"}))
        await asyncio.sleep(0.5)
        assert link.interval == FLUSH_INTERVAL
        console.close()
        for _ in range(500):
            if link.interval == UNWATCHED_FLUSH_INTERVAL:
                break
            await asyncio.sleep(0.01)
        assert link.interval == UNWATCHED_FLUSH_INTERVAL  # the last console went
        stopper = await RunConnection.open(paths)
        stopper.send(Command(name="stop-run", rank=-1))
        await asyncio.sleep(0.2)
        stopper.close()

    try:
        asyncio.run(asyncio.wait_for(watch(), 30))
    finally:
        link.close()
    assert not any(c.name == LINK_PACE for c in commands)  # the link keeps its own command
    assert ended_meta(run_id)["state"] == "stopped"


def test_the_link_keeps_what_arrives_behind_the_welcome(tmp_path: Path) -> None:
    """A supervisor may write its pace command, and the start of the next frame, in the same
    read as the welcome: the link must take the command and finish the frame (it used to drop
    both). A real Unix socket, served by hand so the bytes can be cut where the test says."""
    import threading

    from tuidebug.probe.link import UNWATCHED_FLUSH_INTERVAL, Link
    from tuidebug.wire.messages import LINK_PACE, Welcome

    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    second = codec.encode(Command(name="pause", rank=-1))

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)  # the Hello
        pace = Command(name=LINK_PACE, rank=-1, args={"watched": "0"})
        conn.sendall(codec.encode(Welcome(run_id="r")) + codec.encode(pace) + second[:5])
        threading.Event().wait(0.3)  # the link reads the above first
        conn.sendall(second[5:])
        threading.Event().wait(1.0)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    commands: list[Command] = []
    link = Link.connect(path, "token", 0, 1, commands.append)
    try:
        assert link.interval == UNWATCHED_FLUSH_INTERVAL
        wait_for(lambda: commands, 5, what="the command cut in two")
        assert [c.name for c in commands] == ["pause"]
    finally:
        link.close()
        thread.join(3)
        server.close()
