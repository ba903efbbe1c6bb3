"""A deliberate hang in a real torchrun job (2 ranks, gloo): one rank skips an all_reduce
(tests/scripts/ddp_skip.py). The supervisor's hang watch raises the rank-hang alert naming the
rank behind with its stack inside all_reduce, and `tuidebug stacks` shows where every rank is."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess

from support import ROOT, TUIDEBUG, wait_for

from tuidebug.paths import RunPaths, find_run
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.client import RunConnection
from tuidebug.wire.messages import Command, HistoryDone
from tuidebug.wire.stack_messages import Stacks

SKIP = ROOT / "tests" / "scripts" / "ddp_skip.py"
STEPS = 12


def _alerts_and_stacks(paths: RunPaths) -> tuple[list[Alert], dict[int, Stacks]]:
    async def read() -> tuple[list[Alert], dict[int, Stacks]]:
        connection = await RunConnection.open(paths)
        alerts: list[Alert] = []
        stacks: dict[int, Stacks] = {}
        async for batch in connection.batches():
            for message in batch:
                if isinstance(message, Alert) and message.rule == "rank-hang":
                    alerts.append(message)
                elif isinstance(message, Stacks):
                    stacks[message.rank] = message  # the newest of each rank, kept for consoles
            if any(isinstance(m, HistoryDone) for m in batch):
                break
        connection.close()
        return alerts, stacks

    return asyncio.run(read())


def _stop(paths: RunPaths, pids: list[int]) -> None:
    for pid in pids:  # the ranks, stuck in gloo: Ctrl-C would wait for gloo's timeout
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def stop() -> None:
        connection = await RunConnection.open(paths, history=False)
        connection.send(Command(name="stop-run", rank=-1))
        await asyncio.sleep(0.3)
        connection.close()

    with contextlib.suppress(Exception):
        asyncio.run(stop())


def test_one_rank_skips_an_all_reduce_and_the_hang_is_named_with_stacks(
    run_env: dict[str, str],
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TUIDEBUG, "run", "--detach", "--nproc-per-node", "2", "--hang-after", "2"]
    proc = subprocess.run(
        [*command, str(SKIP), str(STEPS), "1", "5"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    paths = find_run(proc.stdout.split()[2])
    assert paths is not None
    pids: list[int] = []
    try:
        wait_for(lambda: b"rank 1 finished its loop" in paths.pty_log.read_bytes(), 90, 0.2)
        alerts, stacks = wait_for(
            lambda: (found := _alerts_and_stacks(paths))[0] and found, 30, 0.5, what="the alert"
        )
        pids = [s.pid for s in stacks.values()]
        assert len(alerts) == 1
        alert = alerts[0]
        # Rank 0 waits in step 12's all_reduce, which rank 1 (one short since it skipped
        # one) never makes: rank 0 is behind at step 11, rank 1 finished step 12.
        assert alert.place == "rank 0" and alert.rank == 0 and alert.step == STEPS - 1
        assert "rank 0 behind at step 11 (the others at 12)" in alert.message
        assert "rank 0 in <module> (ddp_skip.py:" in alert.message
        assert "all_reduce" in alert.evidence and "dist.all_reduce(logged)" in alert.evidence
        assert sorted(stacks) == [0, 1]

        done = subprocess.run(
            [*TUIDEBUG, "stacks", paths.run_id],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        rank0 = out[out.index("rank 0 (pid") : out.index("rank 1 (pid")]
        rank1 = out[out.index("rank 1 (pid") :]
        training0 = rank0[rank0.index("(training thread)") :].split("\nThread ")[0]
        training1 = rank1[rank1.index("(training thread)") :].split("\nThread ")[0]
        assert "dist.all_reduce(logged)" in training0
        assert "dist.recv(torch.zeros(1), src=0, tag=99)" in training1
    finally:
        _stop(paths, pids)
    wait_for(lambda: paths.read_meta().get("ended"), 30, 0.2, what="the job's end")
