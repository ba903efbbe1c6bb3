"""A job on two "nodes" of this machine: two `tuidebug run --detach --nnodes 2 --node-rank 0/1
--nproc-per-node 1 --rdzv-endpoint 127.0.0.1:PORT` (torchrun's static rendezvous, gloo, DDP),
each with a state folder, a runtime folder and a copy of the job's token file of its own, as two
machines would have. Node 0's supervisor gathers node 1's over TCP (supervisor/nodes.py): a
console attached to node 0 sees both ranks, pauses both at one step, debugs rank 1 (on node 1),
resumes both, and its stop ends both nodes. The TCP port admits nobody without the token.

What one machine cannot show (a real network between the nodes, NCCL, a node lost) is planned
in docs/design.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TUIDEBUG, wait_for
from test_torchrun import DDP, Console, debug_rank_one

from tuidebug.console.run_model import RunModel
from tuidebug.paths import RunPaths, find_run
from tuidebug.supervisor import nodes
from tuidebug.supervisor.launch import job_launch
from tuidebug.wire import codec
from tuidebug.wire.messages import Command, Hello, Notice, Reject, RunInfo
from tuidebug.wire.node_messages import NodeChallenge, NodeHello, NodeProof, RankGone, RankJoined


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (held together while chosen, so all differ)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def start_node(
    node_rank: int, env: dict[str, str], rdzv: int, port: int, token: Path, *args: str
) -> str:
    """``tuidebug run --detach`` of one node of the job; its run id."""
    command = [*TUIDEBUG, "run", "--detach", "--nnodes", "2", "--node-rank", str(node_rank)]
    command += ["--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{rdzv}"]
    command += ["--tuidebug-port", str(port), "--token-file", str(token), str(DDP), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[2]


def kill_run(meta: dict[str, Any]) -> None:
    """SIGKILL a run's supervisor and torchrun (each leads a process group), if still alive."""
    for key in ("pid", "supervisor_pid"):
        pid = meta.get(key)
        if isinstance(pid, int) and pid > 0 and not meta.get("ended"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


async def refused(port: int, proof: str) -> Reject | None:
    """The TCP port's answer to a joining node that offers ``proof`` for the challenge."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(codec.encode(NodeHello(node_rank=1, nonce="n" * 64)))
        challenge = await nodes._read_plain(reader)
        assert isinstance(challenge, NodeChallenge)
        writer.write(codec.encode(NodeProof(proof=proof)))
        answer = await nodes._read_plain(reader)
        assert await reader.read() == b""  # and the port closes the connection
        return answer if isinstance(answer, Reject) else None
    finally:
        writer.close()


async def plain_hello_gets_nothing(port: int, token: str) -> bool:
    """A console's Hello over TCP, even with the right token in it (sent in the clear): the port
    speaks the node handshake only, and refuses it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(codec.encode(Hello(role="console", token=token)))
        answer = await nodes._read_plain(reader)
        return isinstance(answer, Reject) and await reader.read() == b""
    finally:
        writer.close()


def test_two_nodes_on_localhost_one_console_pauses_both(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    rdzv, port = free_ports(2)
    base = Path(run_env["TUIDEBUG_HOME"]).parent
    env0 = {**os.environ, "OMP_NUM_THREADS": "1", **run_env}
    env1 = {**env0, "TUIDEBUG_HOME": str(base / "h1"), "TUIDEBUG_RUNTIME_DIR": str(base / "r1")}
    token0, token1 = tmp_path / "node0-token", tmp_path / "node1-token"
    metas: list[Path] = []
    try:
        head_id = start_node(0, env0, rdzv, port, token0, "100000", "0.005")
        assert token0.stat().st_mode & 0o777 == 0o600  # node 0 made the job's token
        shutil.copy(token0, token1)  # "copied to the other machine", private there too
        os.chmod(token1, 0o600)
        paths = find_run(head_id)
        assert paths is not None
        metas.append(paths.meta)
        member_id = start_node(1, env1, rdzv, port, token1, "100000", "0.005")
        metas.append(base / "h1" / "runs" / member_id / "meta.json")
        asyncio.run(drive(paths, port, token0.read_text().strip()))
        wait_for(lambda: json.loads(metas[1].read_text()).get("ended"), 60, what="node 1 ends")
        member = json.loads(metas[1].read_text())
        assert member["state"] == "stopped", member  # node 0's stop reached node 1's torchrun
        assert member["launch"]["nodes"]["node_rank"] == 1
        # node 1's output, in node 0's log (after ipdb, a line may begin with its escapes)
        lines = paths.pty_log.read_text().splitlines()
        assert any(x.startswith("[rank 1] ") and "rank 1 step 20 loss" in x for x in lines)
    finally:
        for meta in metas:
            with contextlib.suppress(OSError, ValueError):
                kill_run(json.loads(meta.read_text()))


async def drive(paths: RunPaths, port: int, token: str) -> None:
    console = await Console.open(paths)
    model = RunModel()
    try:
        await console.until(
            "both ranks stepping", lambda: min(console.latest.get(r, 0) for r in (0, 1)) > 5, 90
        )
        info = console.of(RunInfo)[-1]
        assert info.world_size == 2

        mark = len(console.messages)
        console.send("pause")  # p: a collective pause, across the two nodes
        paused = await console.all_paused(2, mark)
        steps = {p.step for p in paused.values()}
        assert len(steps) == 1, paused
        held = steps.pop()
        await asyncio.sleep(0.6)
        assert console.latest == {0: held, 1: held}  # nobody moves, nobody is stuck
        model.fold(console.messages)  # what the console's ranks screen shows
        assert sorted(model.ranks.ranks) == [0, 1]
        assert [model.ranks.state_of(r) for r in (0, 1)] == ["paused", "paused"]
        assert {model.ranks.rank(r).step for r in (0, 1)} == {held}

        # The TCP port while the job runs: a wrong token is refused, a console is refused.
        wrong = nodes._proof("x" * 64, "node", "", "")
        answer = await refused(port, wrong)
        assert answer is not None and answer.reason == "bad token"
        with pytest.raises(nodes.NodeLinkError, match="does not hold the job's token"):
            await nodes.join("127.0.0.1", port, "y" * 64, 1)  # node 0 cannot prove it to us
        assert await plain_hello_gets_nothing(port, token)

        # ipdb in rank 1, on node 1, from node 0's console: rank 0 stays paused, and `c`
        # typed there (relayed down to node 1's pty) resumes both.
        await debug_rank_one(console, held)
        await console.until(
            "both ranks going on", lambda: min(console.latest.values()) > held + 10, 60
        )
        mark = len(console.messages)
        console.send("pause")
        again = await console.all_paused(2, mark)
        assert len({p.step for p in again.values()}) == 1, again
        held = again[0].step
        console.send("resume")  # r: both go on
        await console.until(
            "both ranks going on", lambda: min(console.latest.values()) > held + 10, 60
        )
        assert not any(n.level == "error" for n in console.of(Notice))
        console.send("stop-run")
        await console.until("node 0 ends", lambda: paths.read_meta().get("ended"), 60)
    finally:
        console.close()


def test_plan_of_a_job_on_two_nodes(tmp_path: Path) -> None:
    """How `tuidebug run` plans the node link (nodes.plan_nodes): the port, the token file."""
    token = tmp_path / "token"
    two = {"nnodes": "2", "rdzv_endpoint": "10.0.0.5:29400"}
    plan = nodes.plan_nodes(job_launch(4, node_rank=0, **two), None, str(token))
    assert plan == {
        "node_rank": 0,
        "nnodes": 2,
        "host": "10.0.0.5",
        "port": 29401,  # the rendezvous port + 1 by default
        "token_file": str(token),
    }
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    made = token.read_text()
    assert nodes.plan_nodes(job_launch(4, node_rank=0, **two), 7000, str(token))["port"] == 7000
    assert token.read_text() == made  # an existing token is never replaced

    other = tmp_path / "other"
    member = job_launch(4, node_rank=1, **two)
    assert "no such file" in str(nodes.plan_nodes(member, None, str(other)))  # node 1 makes none
    assert "needs --token-file" in str(nodes.plan_nodes(member, None, None))
    other.write_text("z" * 64)
    os.chmod(other, 0o644)
    assert "open to others (mode 644): chmod 600" in str(nodes.plan_nodes(member, None, str(other)))
    os.chmod(other, 0o600)
    assert nodes.plan_nodes(member, None, str(other))["node_rank"] == 1
    other.write_text("short")
    assert "at least 32 characters" in str(nodes.plan_nodes(member, None, str(other)))

    static = job_launch(2, nnodes="2", node_rank=1, master_addr="node0", master_port=6000)
    assert nodes.rendezvous_address(static["torchrun_args"]) == ("node0", 6000)
    assert nodes.rendezvous_address(["--rdzv-endpoint", "[::1]:5000"]) == ("::1", 5000)
    assert "--node-rank 2" in str(
        nodes.plan_nodes(job_launch(1, nnodes="2", node_rank=2), 1, str(token))
    )
    # One node, or node ranks assigned at a c10d rendezvous: nothing to gather (not yet).
    assert nodes.plan_nodes(job_launch(2), None, None) is None
    c10d = job_launch(2, nnodes="2", rdzv_backend="c10d", rdzv_endpoint="h:1")
    assert nodes.plan_nodes(c10d, None, None) is None
    assert "static rendezvous" in str(nodes.plan_nodes(job_launch(2), None, str(token)))


def test_a_node_without_the_token_file_is_refused_by_the_cli(run_env: dict[str, str]) -> None:
    job = ["--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "1"]
    job += ["--rdzv-endpoint", "127.0.0.1:1"]
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", *job, str(DDP), "1", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "a job on 2 nodes needs --token-file FILE on every node" in proc.stderr


def test_sealed_frames_refuse_a_forged_replayed_or_reflected_frame() -> None:
    """The node link's frames carry a MAC over direction and sequence number: a frame made
    without the key, one sent again, or one of the other side's sent back ends the link (over a
    real TCP connection on localhost)."""

    async def main() -> None:
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        accepted = asyncio.Queue()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put((reader, writer))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        key = b"k" * 32
        for attack in ("forged", "replayed", "reflected"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            far_reader, far_writer = await accepted.get()
            up = nodes.Channel(reader, writer, key, outgoing=b"up", incoming=b"down")
            down = nodes.Channel(far_reader, far_writer, key, outgoing=b"down", incoming=b"up")
            joined = RankJoined(rank=3, pid=9)
            up.send(joined)
            assert await down.receive() == joined
            if attack == "forged":  # a debugger opened on rank 3, by someone without the key
                body = codec.encode(Command(name="debug", rank=3))[4:]
                writer.write(codec.HEADER.pack(len(body)) + body + b"\0" * nodes.TAG)
            elif attack == "replayed":  # the very frame sent above, again
                body = codec.encode(joined)[4:]
                writer.write(codec.HEADER.pack(len(body)) + body + up._tag(b"up", 0, body))
            else:  # node 0's own frame, sent back to it
                down.send(RankGone(rank=3))
                header = await reader.readexactly(codec.HEADER.size)
                (length,) = codec.HEADER.unpack(header)
                writer.write(header + await reader.readexactly(length + nodes.TAG))
            with pytest.raises(codec.ProtocolError, match="MAC"):
                await down.receive()
            up.close()
            down.close()
        server.close()

    asyncio.run(main())
