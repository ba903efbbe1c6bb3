"""torchrun jobs under one supervisor, for real: `tuidebug run --detach --nproc-per-node N`
starts torch.distributed.run, every rank a real process with the probe, gloo on the CPU, DDP.

A test talks to the job's supervisor over its socket as a console does (the console's own
commands: pause, step, resume, run-to, debug) and reads what the ranks did from the messages,
the run's history and its output log.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from support import ROOT, TUIDEBUG, wait_for

from tuidebug.paths import RunPaths, find_run
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire.client import RunConnection
from tuidebug.wire.messages import (
    Command,
    DebuggerClosed,
    DebuggerOpened,
    Input,
    Message,
    Notice,
    Output,
    Paused,
    RankEnded,
    ScriptError,
    Steps,
)
from tuidebug.wire.registry import message_union

DDP = ROOT / "tests" / "scripts" / "ddp_steady.py"


def start_job(nproc: int, *args: str, flags: tuple[str, ...] = (), script: Path = DDP) -> RunPaths:
    """``tuidebug run --detach --nproc-per-node N [flags] SCRIPT args`` (ddp_steady.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", "--nproc-per-node", str(nproc), *flags, str(script), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    paths = find_run(proc.stdout.split()[2])
    assert paths is not None
    return paths


def ended(paths: RunPaths, timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: (m := paths.read_meta()).get("ended") and m, timeout, what="job end")


def stored(paths: RunPaths) -> tuple[dict[int, list[tuple[int, float | None]]], list[Message]]:
    """Each rank's (step, loss) points, and every stored event."""
    store = HistoryStore(paths.history, readonly=True)
    points: dict[int, list[tuple[int, float | None]]] = {}
    for message in store.iter_steps():
        points.setdefault(message.rank, []).extend((p.step, p.loss) for p in message.points)
    decode = msgspec.msgpack.Decoder(message_union()).decode
    events = [decode(body) for body in store.iter_event_bodies()]
    store.close()
    return points, events


class Console:
    """A console's connection to a job: every message kept, waited on by predicate."""

    def __init__(self, connection: RunConnection) -> None:
        self.connection = connection
        self.messages: list[Message] = []
        self.latest: dict[int, int] = {}  # rank -> newest step seen
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, paths: RunPaths) -> Console:
        return cls(await RunConnection.open(paths))

    async def _read(self) -> None:
        async for batch in self.connection.batches():
            for message in batch:
                self.messages.append(message)
                if isinstance(message, Steps) and message.points:
                    self.latest[message.rank] = message.points[-1].step

    def send(self, name: str, rank: int = -1, **args: str) -> None:
        self.connection.send(Command(name=name, rank=rank, args=args))

    def of(self, kind: type[Any], since: int = 0) -> list[Any]:
        return [m for m in self.messages[since:] if isinstance(m, kind)]

    async def until(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        for _ in range(int(timeout / 0.02)):
            value = check()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last steps {self.latest}")

    async def all_paused(self, world: int, since: int) -> dict[int, Paused]:
        """Wait until every rank has sent a Paused after message ``since``; by rank."""

        def paused() -> dict[int, Paused] | None:
            by_rank = {p.rank: p for p in self.of(Paused, since)}
            return by_rank if len(by_rank) == world else None

        return await self.until(f"{world} ranks paused", paused)

    def close(self) -> None:
        self._reader.cancel()
        self.connection.close()


def test_a_ddp_job_runs_every_rank_under_one_supervisor(run_env: dict[str, str]) -> None:
    paths = start_job(2, "30", "0")
    meta = ended(paths)
    assert meta["state"] == "finished" and meta["exit_code"] == 0
    assert meta["world_size"] == 2
    assert meta["launch"]["launcher"] == "torch.distributed.run"
    assert meta["launch"]["torchrun_args"] == ["--nproc-per-node", "2", "--standalone"]
    points, events = stored(paths)
    assert sorted(points) == [0, 1]
    assert [s for s, _ in points[0]] == list(range(1, 31))
    assert [s for s, _ in points[1]] == list(range(1, 31))
    assert points[0] == points[1]  # same batch on both ranks, DDP: the same loss every step
    ends = {e.rank: e for e in events if isinstance(e, RankEnded)}
    assert {r: (e.how, e.exit_code, e.step) for r, e in ends.items()} == {
        0: ("finished", 0, 30),
        1: ("finished", 0, 30),
    }
    log = paths.pty_log.read_text()
    for rank in (0, 1):  # every line of a rank's output marked with the rank that wrote it
        assert f"[rank {rank}] rank {rank} step 30 loss" in log
        assert f"[rank {rank}] rank {rank} done" in log
    assert "[rank 0] rank 1" not in log and "[rank 1] rank 0" not in log


def test_collective_pause_step_run_to_debugger_and_a_break_on_one_rank(
    run_env: dict[str, str],
) -> None:
    # Rank 1 alone sees loss > 50 at step 25: every rank must pause, at one step.
    paths = start_job(
        2,
        "3000",
        "0.004",
        "--spike-rank",
        "1",
        "--spike-step",
        "25",
        flags=("--break-on", "loss > 50"),
    )
    wait_for(lambda: paths.read_meta().get("state") == "running", 120, what="running")

    async def drive() -> None:
        console = await Console.open(paths)
        try:
            first = await console.all_paused(2, 0)
            at = {p.step for p in first.values()}
            assert len(at) == 1 and at.pop() >= 25, first
            step = first[0].step
            assert "rank 1: loss > 50 at step 25" in first[0].reason
            console.send("clear-breaks")
            await asyncio.sleep(0.6)
            assert console.latest == {0: step, 1: step}  # held: nobody moves, nobody is stuck

            mark = len(console.messages)
            console.send("step")  # n: exactly one more step on every rank
            moved = await console.all_paused(2, mark)
            assert {p.step for p in moved.values()} == {step + 1}

            mark = len(console.messages)
            console.send("run-to", step=str(step + 40))
            ran = await console.all_paused(2, mark)
            assert {p.step for p in ran.values()} == {step + 40}

            step += 40
            await debug_rank_one(console, step)  # `c` there resumes both ranks
            await console.until(
                "both ranks going", lambda: min(console.latest.values()) > step + 20
            )
            mark = len(console.messages)
            console.send("pause")  # p from the console, while both run
            again = await console.all_paused(2, mark)
            assert len({p.step for p in again.values()}) == 1
            held = again[0].step
            await asyncio.sleep(0.5)
            assert console.latest == {0: held, 1: held}
            console.send("resume")
            await console.until(
                "progress after resume", lambda: min(console.latest.values()) > held + 20
            )
            console.send("stop-run")
            await asyncio.sleep(0.3)
        finally:
            console.close()

    asyncio.run(asyncio.wait_for(drive(), 180))
    meta = ended(paths)
    assert meta["state"] == "stopped"


async def debug_rank_one(console: Console, step: int) -> None:
    """With both ranks paused at ``step``: ipdb in rank 1 with its locals, rank 0 held, and
    `c` typed into rank 1's terminal."""
    mark = len(console.messages)
    console.send("debug", rank=1)
    opened = await console.until("the debugger", lambda: console.of(DebuggerOpened, mark))
    assert opened[0].rank == 1 and opened[0].kind == "at-step"

    def rank_output() -> bytes:
        return b"".join(o.data for o in console.of(Output, mark) if o.rank == 1)

    await console.until("ipdb's prompt", lambda: b"ipdb>" in rank_output())
    console.connection.send(Input(data=b"p ('rank-is', rank, step)\n"))
    answer = f"('rank-is', 1, {step})".encode()
    await console.until("ipdb's answer", lambda: answer in rank_output())
    await asyncio.sleep(0.3)
    assert console.latest == {0: step, 1: step}  # rank 0 stays paused meanwhile
    mark = len(console.messages)
    console.connection.send(Input(data=b"c\n"))
    closed = await console.until("continue", lambda: console.of(DebuggerClosed, mark))
    assert closed[0].rank == 1 and closed[0].continued


def test_four_ranks_pause_together(run_env: dict[str, str]) -> None:
    paths = start_job(4, "3000", "0.004")
    wait_for(lambda: paths.read_meta().get("state") == "running", 120, what="running")

    async def drive() -> None:
        console = await Console.open(paths)
        try:
            await console.until(
                "4 ranks stepping",
                lambda: len(console.latest) == 4 and min(console.latest.values()) > 10,
                timeout=120,
            )
            console.send("pause")
            paused = await console.all_paused(4, 0)
            steps = {p.step for p in paused.values()}
            assert len(steps) == 1, paused
            console.send("stop-run")
            await asyncio.sleep(0.3)
        finally:
            console.close()

    asyncio.run(asyncio.wait_for(drive(), 180))
    meta = ended(paths)
    assert meta["state"] == "stopped" and meta["world_size"] == 4
    points, _ = stored(paths)
    assert sorted(points) == [0, 1, 2, 3]


def test_a_rank_that_crashes_is_recorded_and_the_others_are_torn_down(
    run_env: dict[str, str],
) -> None:
    paths = start_job(2, "200", "0.01", "1", "8")
    meta = ended(paths)
    assert meta["state"] == "crashed" and meta["exit_code"] != 0
    _, events = stored(paths)
    errors = [e for e in events if isinstance(e, ScriptError)]
    assert [e.rank for e in errors] == [1]  # the rank that failed; not rank 0's fallout
    assert errors[0].exc_type == "RuntimeError" and "gave up at step 8" in errors[0].text
    assert 'ddp_steady.py", line' in errors[0].traceback
    ends = {e.rank: e for e in events if isinstance(e, RankEnded)}
    assert (ends[1].how, ends[1].exit_code) == ("crashed", 1)
    assert ends[0].how == "torn-down"
    assert ends[0].text == "stopped by torchrun after rank 1 failed"
    assert "[rank 1] RuntimeError: rank 1 gave up at step 8" in paths.pty_log.read_text()


def span_losses(
    console: Console, since: int, start: int, span: int
) -> dict[int, list[float | None]]:
    """Each rank's losses of steps start+1..start+span reported after message ``since``."""
    found: dict[int, dict[int, float | None]] = {0: {}, 1: {}}
    for message in console.of(Steps, since):
        for point in message.points:
            if start < point.step <= start + span:
                found[message.rank].setdefault(point.step, point.loss)
    return {rank: [by_step[s] for s in sorted(by_step)] for rank, by_step in found.items()}


def rng_notices(console: Console, since: int, verb: str) -> set[int]:
    """The ranks that said their RNG states were ``verb`` (saved, restored) after ``since``."""
    return {n.rank for n in console.of(Notice, since) if f"RNG states {verb}" in n.text}


def test_save_now_and_restore_across_ranks_resume_bit_for_bit(run_env: dict[str, str]) -> None:
    from tuidebug.wire.checkpoint_messages import CheckpointRestored, CheckpointSaved

    paths = start_job(2, "3000", "0.004", "--noise")  # each rank draws noise of its own
    wait_for(lambda: paths.read_meta().get("state") == "running", 120, what="running")
    span = 12

    async def drive() -> None:
        console = await Console.open(paths)
        try:
            await console.until(
                "steps", lambda: len(console.latest) == 2 and min(console.latest.values()) > 10
            )
            mark = len(console.messages)
            console.send("ckpt-save")  # while running: a pause at one step, the save, go on
            saved = (await console.until("the save", lambda: console.of(CheckpointSaved, mark)))[0]
            assert saved.ok and saved.rank == 0, saved
            await console.until("RNG saved", lambda: rng_notices(console, mark, "saved") == {0, 1})
            at = saved.step
            await console.until(
                "steps after the save", lambda: min(console.latest.values()) > at + span
            )
            first = span_losses(console, mark, at, span)
            assert len(first[0]) == len(first[1]) == span
            assert first[0] != first[1]  # the ranks' own noise: different losses

            mark = len(console.messages)
            console.send("pause")
            await console.all_paused(2, mark)
            mark = len(console.messages)
            console.send("ckpt-restore", path=saved.path)
            await console.until(
                "both restored", lambda: len(console.of(CheckpointRestored, mark)) == 2
            )
            restored = console.of(CheckpointRestored, mark)
            assert all(r.ok and r.step == at for r in restored), restored
            await console.until(
                "RNG restored", lambda: rng_notices(console, mark, "restored") == {0, 1}
            )
            console.send("resume")
            await console.until(
                "the replay",
                lambda: (
                    len(span_losses(console, mark, at, span)[1]) == span
                    and len(span_losses(console, mark, at, span)[0]) == span
                ),
            )
            assert span_losses(console, mark, at, span) == first  # every rank, bit for bit
            console.send("stop-run")
            await asyncio.sleep(0.3)
        finally:
            console.close()

    asyncio.run(asyncio.wait_for(drive(), 180))
    assert ended(paths)["state"] == "stopped"
    saved_files = list(paths.folder.glob("checkpoints/*.ranks/rank-*.pt"))
    assert sorted(p.name for p in saved_files) == ["rank-0.pt", "rank-1.pt"]
