"""A torchrun job whose launcher is killed: each rank is in a session of its own and trains
on. Before, the supervisor took the launcher's exit for the run's end and left them running
as orphans nobody could see or stop (seen: a dozen ddp_steady.py ranks of earlier tests at a
load of 11 on 2 cores). tests/conftest.py also kills, after each test, every process with the
test's TUIDEBUG_HOME in its environment."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from conftest import _processes_with_env
from test_torchrun import Console, start_job

from tuidebug.wire.messages import Notice, RankEnded, RunInfo


def _ranks(entry: str) -> list[int]:
    found = []
    for pid in _processes_with_env(entry):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # A rank's command line is "python -u -m tuidebug.probe.bootstrap ddp_steady.py ..."
        # (the launcher's holds both too, after -m torch.distributed.run).
        if command.split(b"\0")[1:4] == [b"-u", b"-m", b"tuidebug.probe.bootstrap"]:
            found.append(pid)
    return found


def test_a_killed_launcher_does_not_orphan_its_ranks(run_env: dict[str, str]) -> None:
    """torchrun killed (the OOM killer, a stray kill -9): each rank has a session of its own
    and trains on. The run stays open and says so, and a stop from the console ends them."""
    entry = f"TUIDEBUG_HOME={run_env['TUIDEBUG_HOME']}"
    paths = start_job(2, "100000", "0.005")

    async def scenario() -> Console:
        console = await Console.open(paths)
        await console.until("both ranks stepping", lambda: len(console.latest) == 2)
        os.killpg(paths.read_meta()["pid"], signal.SIGKILL)
        said = await console.until(
            "the launcher's end said",
            lambda: [n for n in console.of(Notice) if "launcher" in n.text],
        )
        assert said[0].level == "error"
        assert "ended (killed by signal 9) while ranks 0, 1 still run" in said[0].text
        await asyncio.sleep(1.0)
        assert not paths.read_meta().get("ended") and len(_ranks(entry)) == 2
        stepped = dict(console.latest)
        await console.until("steps after the launcher's end", lambda: console.latest != stepped)
        console.send("stop-run")
        await console.until(
            "the run's end", lambda: [i for i in console.of(RunInfo) if i.ended is not None]
        )
        console.close()
        return console

    console = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert not _ranks(entry)  # no orphan left
    ended = {m.rank: m.how for m in console.of(RankEnded)}
    assert ended == {0: "stopped", 1: "stopped"}, ended
    meta = paths.read_meta()
    assert meta["state"] == "stopped" and meta["exit_code"] == 137, meta
