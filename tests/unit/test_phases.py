"""The step-time breakdown: real torch, the real probe and its hooks, in process and under the
real ``tuidebug run --detach`` (the phases read back from the run's stored history)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from support import ROOT, start_detached, wait_for
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import _BaseDataLoaderIter

from tuidebug.paths import find_run
from tuidebug.probe.observer import Observer
from tuidebug.probe.phases import PhaseClock
from tuidebug.probe.probe import Probe
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire import codec
from tuidebug.wire.messages import Message, StepPoint
from tuidebug.wire.phase_messages import StepPhases, summarize

SCRIPTS = ROOT / "tests" / "scripts"


class Sink:
    """Stands in for the probe's socket link (the wire has its own tests)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def push_point(self, point: StepPoint) -> None:
        pass

    def send(self, message: Message) -> None:
        # Through the codec, as between probe and console.
        decoded = codec.decode_body(codec.encode(message)[4:])
        assert decoded is not None
        self.messages.append(decoded)

    def phases(self) -> list[StepPhases]:
        return [m for m in self.messages if isinstance(m, StepPhases)]


def _probe() -> tuple[Probe, PhaseClock, Sink]:
    sink = Sink()
    probe = Probe(sink)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    clock = PhaseClock(probe.send, 0, interval=0.0)  # a message per step: easy to read
    probe.phases = clock
    probe.add_observer(clock)
    return probe, clock, sink


class Sleepy(torch.nn.Module):
    """A linear layer whose forward also sleeps ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.linear(x)


class SlowItems(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(0.01)
        return torch.full((16, 4), float(index))


class SlowBoundary(Observer):
    """Work at the boundary (as a checkpoint save would be): no step's time."""

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        time.sleep(0.03)
        return None


def test_phases_of_a_loop_land_where_the_time_went() -> None:
    original_next = _BaseDataLoaderIter.__next__
    probe, clock, sink = _probe()
    probe.add_observer(SlowBoundary())
    model = Sleepy(0.004)
    evaluator = Sleepy(0.006)  # a second root model, called under no_grad: "other"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    assert _BaseDataLoaderIter.__next__ is not original_next  # timed while the clock lives
    try:
        for x in DataLoader(SlowItems(), batch_size=None):
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                evaluator(x)
            time.sleep(0.005)  # the script's own work: "other"
        # The models are found at the end of step 1: its forward is not hooked yet, and step 1
        # is never counted (it holds the setup since the probe started).
        batches = sink.phases()
        assert [b.first for b in batches] == list(range(2, 9))
        assert all(b.steps == 1 for b in batches)
        for b in batches:
            ms = {k: v * 1e3 for k, v in b.per_step().items()}
            assert 9 <= ms["data"] < 25, ms
            assert 4 <= ms["forward"] < 9, ms  # the training forward only
            assert ms["backward"] < 4 and ms["optimizer"] < 4, ms
            assert 11 <= ms["other"] < 25, ms  # evaluation + the loop's sleep
            # The 30 ms at each boundary are in no step.
            assert b.total * 1e3 < 45, b.total
    finally:
        probe.remove_hooks()
    # Closing puts __next__ back and unhooks the models: a new loop is not timed.
    assert _BaseDataLoaderIter.__next__ is original_next
    assert not model._forward_hooks and not model._forward_pre_hooks
    clock.acc[:] = [0.0] * 4
    for x in DataLoader(SlowItems(), batch_size=None):
        model(x)
    assert clock.acc == [0.0] * 4


def test_hand_written_sgd_still_has_a_backward_phase() -> None:
    """No optimizer: the boundary is the next backward; the backward phase is its own call."""
    probe, _clock, sink = _probe()
    torch.manual_seed(0)
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(256, 64)
    try:
        for _ in range(6):
            loss = torch.tanh(x @ w).pow(2).mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.01 * w.grad  # type: ignore[operator]
                w.grad = None
        probe.finish()
    finally:
        probe.remove_hooks()
    batches = sink.phases()
    assert batches and sum(b.steps for b in batches) == 5  # steps 2..6
    assert all(b.backward > 0 and b.optimizer == 0 and b.data == 0 for b in batches)


def _phases_of(run_id: str) -> list[StepPhases]:
    paths = find_run(run_id)
    assert paths is not None
    wait_for(lambda: paths.read_meta().get("ended"), timeout=60, what="the run to end")
    assert paths.read_meta().get("exit_code") == 0
    store = HistoryStore(paths.history, readonly=True)
    try:
        messages = [codec.decode_body(body) for body in store.iter_event_bodies()]
    finally:
        store.close()
    return [m for m in messages if isinstance(m, StepPhases)]


@pytest.mark.parametrize(
    ("script", "largest"), [("slow_data.py", "data"), ("slow_optimizer.py", "optimizer")]
)
def test_the_slow_phase_of_a_real_run_is_the_largest(
    run_env: dict[str, str], script: str, largest: str
) -> None:
    run_id = start_detached(SCRIPTS / script, "30", "0.03")
    summary: dict[str, Any] = summarize(_phases_of(run_id))
    assert summary["steps"] == 29  # steps 2..30: every step counted
    assert summary["largest"] == largest, summary
    assert summary["ms_per_step"][largest] >= 28, summary
    assert summary["share"][largest] > 0.5, summary


def test_the_benchmark_runs_and_reports_its_ratios(tmp_path: Path) -> None:
    """A tiny run of every variant (no timing asserted: figures come from real runs)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_phases.py"),
            *("--rounds", "2", "--steps", "2", "--warmup", "2", "--copies", "1"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    rows = {row["variant"]: row for row in results["rows"]}
    assert set(rows) == {
        "bare",
        "boundary",
        "boundary + breakdown",
        "default + breakdown",
        "profiling",
    }
    assert rows["bare"]["ratio_median"] == 1.0
    assert all(row["ms_median"] > 0 for row in rows.values())
    assert rows["profiling"]["trace_bytes"] > 0
    assert results["messages"] > 0  # the breakdown sent its batches
    assert "target: default + breakdown" in done.stdout
