"""The console's view of every rank of a job: RunModel.ranks, rank-marked output, per-rank
layers and alerts, a stored job's output. Plain messages in, figures out (no Textual)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from tuidebug.console.checks_state import ChecksState
from tuidebug.console.layers_model import RankedLayers
from tuidebug.console.ranks_state import BAND, STRAGGLER_RATIO
from tuidebug.console.run_model import RunModel
from tuidebug.console.sources import StoredSource
from tuidebug.console.terminal_text import RankedText
from tuidebug.paths import RunPaths
from tuidebug.supervisor.ranks import RankOutput
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.checkpoint_messages import CheckpointRestored
from tuidebug.wire.gpu_messages import AllocatorStats, DeviceMemory
from tuidebug.wire.layer_messages import LayerTable
from tuidebug.wire.messages import (
    DebuggerClosed,
    DebuggerOpened,
    Message,
    Output,
    Paused,
    RankEnded,
    Resumed,
    RunInfo,
    ScriptError,
    StepPoint,
    Steps,
)
from tuidebug.wire.phase_messages import StepPhases

T0 = 100.0


def info(world_size: int = 4, state: str = "running") -> RunInfo:
    return RunInfo(
        run_id="r1",
        script="train.py",
        args=[],
        cwd="/",
        started=T0,
        state=state,  # type: ignore[arg-type]
        world_size=world_size,
    )


def loss_of(rank: int, step: int) -> float:
    return 1.0 / step + 0.1 * rank


def steps(rank: int, start: int, count: int, dt: float = 0.01) -> Steps:
    points = [StepPoint(s, T0 + s * dt, loss_of(rank, s)) for s in range(start, start + count)]
    return Steps(rank=rank, step=points[-1].step, points=points)


def job(world: int = 4, count: int = 100, slow: int | None = None) -> RunModel:
    model = RunModel()
    batch: list[Message] = [info(world)]
    for rank in range(world):
        batch.append(steps(rank, 1, count, dt=0.02 if rank == slow else 0.01))
    model.fold(batch)
    return model


def test_one_process_is_rank_zero_and_the_chart_is_its_loss() -> None:
    model = RunModel()
    model.fold([info(1), steps(0, 1, 50)])
    assert model.ranks.size == 1 and list(model.ranks.ranks) == [0]
    assert model.loss is model.ranks.rank(0).loss and len(model.loss) == 50
    assert model.ranks.shown_history() is model.loss
    assert len(model.ranks.band) == 0  # no band for one process: no cost either
    assert model.ranks.state_of(0, T0 + 0.6) == "running"


def test_per_rank_step_rate_loss_and_median_step_time() -> None:
    model = job(slow=2)
    ranks = model.ranks
    assert ranks.size == 4 and model.step == 100
    for rank in range(4):
        state = ranks.rank(rank)
        assert state.step == 100 and state.steps_seen == 100
        assert state.last_loss == pytest.approx(loss_of(rank, 100))
        dt = 0.02 if rank == 2 else 0.01
        median = state.median_step_time()
        rate = state.steps_per_second()
        assert median is not None and math.isclose(median, dt, rel_tol=1e-6)
        assert rate is not None and math.isclose(rate, 1 / dt, rel_tol=1e-3)
        assert len(state.loss) == 100


def test_a_slow_rank_is_a_straggler_with_its_figure() -> None:
    ranks = job(slow=2).ranks
    slow = ranks.straggler(2)
    assert slow is not None and slow.basis == "step time" and slow.label() == "slow x2.0"
    assert math.isclose(slow.ratio, 2.0, rel_tol=1e-6) and slow.ratio > STRAGGLER_RATIO
    assert all(ranks.straggler(r) is None for r in (0, 1, 3))
    # Two ranks: the other rank's median is the reference, so one of two can be slow.
    pair = job(world=2, slow=1).ranks
    two = pair.straggler(1)
    assert two is not None and two.ratio == pytest.approx(2.0) and pair.straggler(0) is None
    # Even ranks: nobody is marked.
    assert all(job().ranks.straggler(r) is None for r in range(4))


def phases(rank: int, forward: float, backward: float, steps: int = 50) -> StepPhases:
    """A rank's breakdown: per step ``forward`` s of its own, ``backward`` s (waits included)."""
    total = (forward + backward + 0.001) * steps
    return StepPhases(
        rank=rank,
        step=steps,
        first=1,
        steps=steps,
        total=total,
        forward=forward * steps,
        backward=backward * steps,
    )


def test_in_lockstep_the_straggler_is_the_rank_whose_own_work_is_long() -> None:
    # DDP: every rank's step takes 10 ms boundary to boundary; rank 1 computes for 7 ms, the
    # others for 3 ms and wait for it in backward's all-reduce.
    model = job(world=4)
    model.fold(
        [phases(r, 0.007 if r == 1 else 0.003, 0.002 if r == 1 else 0.006) for r in range(4)]
    )
    ranks = model.ranks
    slow = ranks.straggler(1)
    assert slow is not None and slow.basis == "own work"
    assert slow.ratio == pytest.approx(0.008 / 0.004) and slow.label() == "slow x2.0 (own work)"
    assert all(ranks.straggler(r) is None for r in (0, 2, 3))
    # When the step times differ, they decide (the breakdown is not looked at).
    uneven = job(world=4, slow=3)
    uneven.fold([phases(r, 0.007 if r == 1 else 0.003, 0.003) for r in range(4)])
    assert uneven.ranks.straggler(1) is None
    mark = uneven.ranks.straggler(3)
    assert mark is not None and mark.basis == "step time"


def test_a_rank_that_raised_is_dead_with_exit_1_and_its_end_says_more() -> None:
    model = job()
    error = ScriptError(rank=3, step=100, exc_type="RuntimeError", text="x", traceback="tb")
    model.fold([error])
    ranks = model.ranks
    assert ranks.state_of(3, T0 + 1.1) == "dead, exit 1" and not ranks.rank(3).alive
    assert ranks.trouble() == "1 down"  # the header says so in a job
    held = ScriptError(rank=1, step=100, exc_type="ValueError", text="x", traceback="tb", held=True)
    model.fold([held])
    assert ranks.state_of(1, T0 + 1.1) == "held"
    model.fold(
        [
            RankEnded(rank=3, step=100, exit_code=7, how="crashed", text="rank 3 exited"),
            RankEnded(rank=0, step=100, how="torn-down", text="stopped by torchrun"),
            RankEnded(rank=2, step=100, how="died"),
        ]
    )
    assert ranks.state_of(3) == "dead, exit 7"
    assert ranks.state_of(0) == "torn down"
    assert ranks.state_of(2) == "dead (signal)"
    # The end of the run settles the rest: a held rank is dead once the job is over.
    model.fold([info(state="crashed")])
    assert ranks.state_of(1) == "dead, exit 1"


def test_paused_waiting_and_the_job_pause_lasts_while_any_rank_is_paused() -> None:
    model = job()
    ranks = model.ranks
    model.fold([Paused(rank=0, step=100, reason="pause"), Paused(rank=1, step=100, reason="p")])
    assert ranks.state_of(0) == "paused" and model.state == "paused"
    model.fold([Resumed(rank=0, step=100)])
    assert ranks.state_of(0, T0 + 1.01) == "running"
    assert model.paused is not None and model.paused.rank == 1  # rank 1 is still paused
    model.fold([Resumed(rank=1, step=100)])
    assert model.paused is None and model.state == "running"
    # No step for 10 median step times (and 2 s): most likely inside a collective.
    assert ranks.state_of(2, T0 + 1.0 + 1.5) == "running"
    assert ranks.state_of(2, T0 + 1.0 + 12.0) == "waiting 12s"
    model.fold([info(state="finished")])
    assert ranks.state_of(2, T0 + 100) == "finished"


def test_the_rank_with_a_debugger_open_is_in_debugger_until_it_closes() -> None:
    model = job(world=2)
    ranks = model.ranks
    model.fold([Paused(rank=0, step=100, reason="p"), Paused(rank=1, step=100, reason="p")])
    model.fold([DebuggerOpened(rank=1, step=100, kind="at-step")])
    # Also while the console's terminal is back from it (Ctrl-]): d goes back to rank 1.
    assert ranks.state_of(1) == "in debugger" and ranks.state_of(0) == "paused"
    assert model.state == "paused" and model.debugger_place() == "rank 1"
    model.fold([DebuggerClosed(rank=1, step=100, continued=False)])  # q: back to the pause
    assert ranks.state_of(1) == "paused" and model.debugger is None
    model.fold([DebuggerOpened(rank=1, step=100, kind="at-step")])
    model.fold([RankEnded(rank=1, step=100, exit_code=None, how="died", text="killed")])
    assert ranks.state_of(1) == "dead (signal)"
    one = job(world=1)
    one.fold([Paused(rank=0, step=100, reason="p"), DebuggerOpened(rank=0, step=100, kind="x")])
    assert one.ranks.state_of(0) == "in debugger" and one.debugger_place() == "the run"


def test_the_gpu_of_a_rank_comes_from_its_allocator() -> None:
    model = job()
    devices = [DeviceMemory(device=0), DeviceMemory(device=3, allocated=1 << 20)]
    model.fold([AllocatorStats(rank=3, devices=devices)])
    assert model.ranks.rank(3).gpu == 3 and model.ranks.rank(0).gpu is None


def test_the_band_holds_every_rank_step_by_step_and_waits_for_the_slowest() -> None:
    model = RunModel()
    model.fold([info(3), steps(0, 1, 10), steps(1, 1, 10), steps(2, 1, 6)])
    band = model.ranks.band
    buckets = band.buckets()
    assert [b["first_step"] for b in buckets] == [1, 2, 3, 4, 5, 6]  # rank 2 is at step 6
    for bucket in buckets:
        step = int(bucket["first_step"])
        values = [loss_of(r, step) for r in range(3)]
        assert bucket["count"] == 3
        assert bucket["min"] == pytest.approx(min(values))
        assert bucket["max"] == pytest.approx(max(values))
        assert bucket["sum"] / 3 == pytest.approx(sum(values) / 3)
    model.fold([steps(2, 7, 4)])
    assert band.last_step == 10
    # A rank that died does not hold the band back.
    model.fold([ScriptError(rank=2, step=10, exc_type="E", text="", traceback="")])
    model.fold([steps(0, 11, 5), steps(1, 11, 5)])
    assert band.last_step == 15 and band.buckets()[-1]["count"] == 2


def test_cycling_the_chart_goes_through_every_rank_then_the_band() -> None:
    model = job(world=3)
    ranks = model.ranks
    assert ranks.shown == 0 and ranks.shown_label() == "rank 0/3"
    shown = [ranks.cycle_shown() for _ in range(4)]
    assert shown == [1, 2, BAND, 0]
    ranks.cycle_shown()
    assert ranks.shown_history() is ranks.rank(1).loss and ranks.shown_label() == "rank 1/3"
    ranks.shown = BAND
    assert ranks.shown_history() is ranks.band and ranks.shown_label() == "ranks 0-2 band"


def test_a_restore_on_every_rank_marks_each_history_and_starts_the_band_over() -> None:
    model = job(world=2, count=20)
    band = model.ranks.band
    assert band.last_step == 20
    restore = [
        CheckpointRestored(rank=r, step=10, from_step=20, ok=True, path="ckpt") for r in (0, 1)
    ]
    # Rank 0 restores and goes on first; rank 1 still sends a step of the old branch.
    model.fold([restore[0], steps(0, 10, 3), steps(1, 21, 1)])
    assert [m.step for m in model.loss.markers] == [10]  # rank 0's chart, as before
    assert band.rewinds == 1 and band.last_step == 10  # the marker; no point of either branch
    assert band.total == 40  # waiting: rank 1 has not restored yet
    model.fold([restore[1], steps(1, 10, 3)])
    assert band.rewinds == 1 and band.last_step == 12
    assert [m.label for m in band.markers] == ["restore"]
    assert [int(b["count"]) for b in band.buckets()[-3:]] == [2, 2, 2]  # no old-branch point


def test_ranked_output_keeps_each_rank_apart_and_reads_torch_prefixes() -> None:
    text = RankedText()
    text.feed(0, b"rank0 starts\r\n[##--] 2/4\r")
    text.feed(1, b"rank1 sta")
    text.feed(0, b"[####] 4/4\r\n")
    text.feed(1, b"rts\n")
    launcher = b"W1202 launcher warning\n[rank2]: from c10d\n[default3]: tee header\n[1]: tpl\n"
    text.feed(-1, launcher)
    assert text.select(None) == [
        (0, "rank0 starts"),
        (0, "[####] 4/4"),  # the progress bar's last redraw, not mixed with rank 1's bytes
        (1, "rank1 starts"),
        (-1, "W1202 launcher warning"),
        (2, "from c10d"),
        (3, "tee header"),
        (1, "tpl"),
    ]
    assert text.select(1) == [(1, "rank1 starts"), (1, "tpl")]
    assert text.ranks == {-1, 0, 1, 2, 3} and text.completed == 7
    text.feed(2, b"50%\r")
    tail = text.tail(2)
    assert "[rank 1]" in tail[0] and tail[0].endswith("tpl")
    assert "[rank 2]" in tail[1] and tail[1].endswith("50%")  # the line being written, last
    # A single process: rank 0's text is the whole output, unmarked.
    model = RunModel()
    model.fold([Output(data=b"hello\n")])
    assert list(model.output.lines) == ["hello"] and model.outputs.select(None) == [(0, "hello")]


def test_layers_and_alerts_are_kept_per_rank() -> None:
    layers = RankedLayers()
    table = dict(model="net", base=0, names=[""], types=["Linear"], depths=[0], params=[4])
    layers.fold([LayerTable(rank=0, **table), LayerTable(rank=1, **table)])  # type: ignore[arg-type]
    assert layers.ranks() == [0, 1]
    assert layers.model(1) is not layers.model(0) and len(layers.model(1).rows) == 1
    assert layers.model(5) is layers.model(0)  # a rank without data: rank 0's
    checks = ChecksState()
    alert = dict(rule="r", severity="warning", message="m", why="w", fix="f")
    checks.fold([Alert(rank=0, **alert), Alert(rank=1, **alert), Alert(rank=1, **alert)])  # type: ignore[arg-type]
    assert checks.ranks() == [0, 1]
    assert len(checks.visible()) == 3 and len(checks.visible(1)) == 2


def test_a_stored_job_replays_each_rank_s_output_marked(tmp_path: Path) -> None:
    paths = RunPaths("20261202-000000-abcd", tmp_path, tmp_path / "none.sock")
    paths.write_meta({"script": "train.py", "state": "finished", "world_size": 2})
    with open(paths.pty_log, "wb") as log:
        writer = RankOutput(log)
        writer.write(0, b"zero\n")
        writer.write(1, b"one\n")
        writer.write(-1, b"[rank1]: from torch\nlauncher\n")
        writer.flush()

    async def read() -> list[Message]:
        return [m async for batch in StoredSource(paths).batches() for m in batch]

    model = RunModel()
    model.fold(asyncio.run(read()))
    assert model.ranks.world_size == 2
    assert model.outputs.select(None) == [
        (0, "zero"),
        (1, "one"),
        (1, "from torch"),
        (-1, "launcher"),
    ]
