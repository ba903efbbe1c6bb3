"""CUDA memory snapshot on demand (issue 18 item 3).

This machine has no GPU, so:
- the snapshot's reading (top allocation sites, peak, live bytes) is tested on a fake snapshot
  built to the format of ``torch.cuda.memory._snapshot()`` (``tests/cuda_snapshot.py``; torch's
  own ``_memory_viz`` readers are run over it to show it has that format);
- the probe's K-step recording runs in a real training loop with a real probe, with
  ``torch.cuda.memory``'s recorder and snapshot replaced by stand-ins that take the real
  functions' signatures (the CPU build has no allocator to record);
- the no-CUDA path is real: in process, and through ``tuidebug run --detach`` and
  ``tuidebug memory RUN --steps 3``.
``tests/gpu/check_memory_snapshot.py`` does the real thing on a GPU machine.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cuda_snapshot import (
    CWD,
    FORWARD_SITE,
    HOOK_SITE,
    LIBRARY_SITE,
    OPTIMIZER_SITE,
    OWN,
    PIN_SITE,
    PINNED,
    SCRIPT,
    STDLIB,
    TORCH,
    M,
    fake_snapshot,
)
from support import DEMOS, ROOT, TUIDEBUG, Sink, small_losses, start_detached, stop_run, wait_for

from tuidebug.memory_cli import NO_CUDA_EXIT, result_dict, result_text
from tuidebug.paths import find_run
from tuidebug.probe.extensions import memory
from tuidebug.probe.memory_sites import NO_STACK, summarize_snapshot
from tuidebug.probe.probe import Probe
from tuidebug.wire import codec
from tuidebug.wire.gpu_messages import MemorySnapshotResult, MemorySnapshotStarted
from tuidebug.wire.messages import Command, Notice

ROOTS = {"internal": [TORCH, STDLIB], "own": [OWN], "cwd": CWD}


def test_the_fixture_has_the_format_torch_reads() -> None:
    from torch.cuda import _memory_viz

    data = fake_snapshot()
    # torch's own readers of a snapshot: the flamegraph lines, the segment summary, the trace.
    lines = _memory_viz.memory(data, format_flamegraph=lambda text: text)
    assert "train.py:44:main" in lines  # Adam's live block, named by its frames
    assert "Summary of segments" in _memory_viz.segsum(data)
    trace = _memory_viz.trace(data)  # every event replayed, by action
    assert f"{len(data['device_traces'][0])} entries" in trace
    assert "cudaMalloc" in trace and trace.count("del ") == 6


def test_top_sites_are_the_scripts_lines_with_peak_and_live_bytes() -> None:
    summary = summarize_snapshot(fake_snapshot(), **ROOTS)  # type: ignore[arg-type]
    assert summary.live == (8 + 8 + 16 + 2) * M  # P, Adam, step 2's gradient, the pinned copy
    assert summary.reserved == (64 + 8 + 2) * M
    assert summary.before == 8 * M  # P: no frames, never allocated while recording
    assert summary.peak == 64 * M  # P + Adam + activation + gradient, at step 2's gradient
    assert summary.allocs == 8
    assert summary.entries == 8 + 6 * 2 + 2  # allocs, frees (requested, completed), the rest
    sites = {s.site: s for s in summary.sites}
    # (peak, live at the end, allocations, bytes allocated, the script's own?)
    figures = {name: (s.peak, s.live, s.allocs, s.allocated, s.user) for name, s in sites.items()}
    assert figures == {
        FORWARD_SITE: (32 * M, 0, 2, 64 * M, True),  # torch's frames skipped to the script's
        NO_STACK: (16 * M, 16 * M, 2, 32 * M, False),  # gradients: no Python on that thread
        OPTIMIZER_SITE: (8 * M, 8 * M, 1, 8 * M, True),  # through the probe's wrapper
        PIN_SITE: (2 * M, 2 * M, 1, 2 * M, False),  # nothing outside torch: the innermost
        HOOK_SITE: (1 * M, 0, 1, 1 * M, False),  # torch called the probe: the probe's own
        LIBRARY_SITE: (1 * M, 0, 1, 1 * M, True),  # installed under the stdlib: not internal
    }
    # Ranked by peak: the forward's activation first.
    assert [s.site for s in summary.sites[:4]] == [
        FORWARD_SITE,
        NO_STACK,
        OPTIMIZER_SITE,
        PIN_SITE,
    ]
    assert len(summarize_snapshot(fake_snapshot(), limit=2, **ROOTS).sites) == 2  # type: ignore[arg-type]


def test_sites_with_c_frames_only_and_an_empty_snapshot() -> None:
    data = fake_snapshot()
    native_only = [{"filename": "??", "line": 0, "name": "c10::cuda::malloc"}]
    for event in data["device_traces"][0]:
        if event["action"] == "alloc" and event["addr"] == PINNED:
            event["frames"] = native_only
    data["segments"][1]["blocks"][1]["frames"] = native_only
    sites = {s.site: s for s in summarize_snapshot(data, **ROOTS).sites}  # type: ignore[arg-type]
    assert sites["??:0 in c10::cuda::malloc"].live == 2 * M
    assert not sites["??:0 in c10::cuda::malloc"].user
    empty = summarize_snapshot({"segments": [], "device_traces": [[]]}, internal=[TORCH])
    assert (empty.sites, empty.live, empty.peak, empty.allocs) == ([], 0, 0, 0)


# --- the probe's recording, on a real training loop ---------------------------------------------


class StandInRecorder:
    """``torch.cuda.memory``'s history recorder and snapshot, for a machine without CUDA: each
    call is checked against the real function's signature and noted with the probe's step."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.calls: list[tuple[str, int, dict[str, Any]]] = []
        self.real_record = inspect.signature(torch.cuda.memory._record_memory_history)
        self.real_snapshot = inspect.signature(torch.cuda.memory._snapshot)

    def record(self, *args: Any, **kwargs: Any) -> None:
        bound = self.real_record.bind(*args, **kwargs)  # a TypeError where torch would raise one
        self.calls.append(("record", self.probe.step, dict(bound.arguments)))

    def snapshot(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.real_snapshot.bind(*args, **kwargs)
        self.calls.append(("snapshot", self.probe.step, {}))
        return fake_snapshot()


@pytest.fixture
def standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Probe, Sink, StandInRecorder]]:
    """A real probe with the memory extension, its recorder and snapshot replaced by stand-ins
    (no GPU here); the snapshots go to ``tmp_path``. No auto hooks yet: a test installs them
    when its own loop begins (they would follow every loop from here)."""
    sink = Sink()
    probe = Probe(sink)  # type: ignore[arg-type]
    recorder = StandInRecorder(probe)
    monkeypatch.setattr(memory, "_cuda_ready", lambda: True)
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", recorder.record)
    monkeypatch.setattr(torch.cuda.memory, "_snapshot", recorder.snapshot)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # the 1 Hz figures: no device
    memory.install(probe, {"run_folder": str(tmp_path)})
    yield probe, sink, recorder
    probe.remove_hooks()  # idempotent: a test that failed early leaves no hook behind


def test_a_snapshot_records_k_steps_from_a_boundary_and_stops_by_itself(
    tmp_path: Path, standin: tuple[Probe, Sink, StandInRecorder]
) -> None:
    bare = small_losses(9)
    probe, sink, recorder = standin
    probe.install_auto_hooks()
    try:
        probed = small_losses(9, probe, ask_at=3, command="memory-snapshot")
    finally:
        probe.remove_hooks()
    assert probed == bare  # bit for bit
    # Asked during step 3: recording starts at step 3's boundary and covers steps 4, 5, 6; the
    # snapshot is taken at step 6's boundary, then recording stops (enabled=None).
    (start, snap, stop) = recorder.calls
    assert start[:2] == ("record", 3)
    assert start[2]["enabled"] == "all" and start[2]["stacks"] == "python"
    assert start[2]["clear_history"] is True
    assert snap[:2] == ("snapshot", 6)
    assert stop == ("record", 6, {"enabled": None})
    (started,) = sink.of(MemorySnapshotStarted)
    assert (started.step, started.steps) == (3, 3)
    assert any("recording" in n.text for n in sink.of(Notice))  # the second request
    (result,) = sink.of(MemorySnapshotResult)
    assert not result.error and not result.unavailable, result.error
    assert (result.first, result.step) == (4, 6)
    # The pickle is what torch.cuda.memory._dump_snapshot writes: the snapshot, pickled.
    path = Path(result.path)
    assert path == tmp_path / "memory" / "snapshot-4-6-rank0.pickle"
    assert pickle.loads(path.read_bytes()) == fake_snapshot()
    assert result.file_bytes == path.stat().st_size
    assert not list(path.parent.glob("*.tmp"))
    # Named in full: the script's folder (/proj) is not this process's working directory.
    assert result.sites[0].site == f"{SCRIPT}:21 in forward" and result.peak == 64 * M
    assert result.wall > 0 and result.overhead > 0
    # Through the wire codec and into the CLI's text and JSON.
    decoded = codec.decode_body(codec.encode(result)[4:])
    assert isinstance(decoded, MemorySnapshotResult) and decoded == result
    text = result_text(decoded)
    assert "steps 4-6" in text and "peak 64.0 MiB" in text and "pytorch.org/memory_viz" in text
    (row,) = [line for line in text.splitlines() if line.endswith(f"{SCRIPT}:21 in forward")]
    assert row.split()[:7] == ["32.0", "MiB", "0", "B", "2", "64.0", "MiB"]
    assert result_dict(decoded)["sites"][0]["peak"] == 32 * M


def test_the_script_ending_while_recording_still_writes_the_snapshot(
    standin: tuple[Probe, Sink, StandInRecorder],
) -> None:
    probe, sink, recorder = standin
    try:
        for step in (1, 2, 3):  # asked at step 1 for 50 steps; the script ends after 3
            if step == 1:
                probe.handle_command(Command(name="memory-snapshot", args={"steps": "50"}))
            probe.on_hook_step(0.5, {})  # dbg.step(loss): a boundary
    finally:
        probe.remove_hooks()  # the script's end: observers close
    (result,) = sink.of(MemorySnapshotResult)
    assert (result.first, result.step) == (2, 3)
    assert Path(result.path).name == "snapshot-2-3-rank0.pickle" and Path(result.path).exists()
    assert [c[0] for c in recorder.calls] == ["record", "snapshot", "record"]
    assert recorder.calls[-1][2] == {"enabled": None}


def test_without_cuda_a_calm_answer_and_nothing_recorded(tmp_path: Path) -> None:
    assert not torch.cuda.is_initialized()
    sink = Sink()
    probe = Probe(sink)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    memory.install(probe, {"run_folder": str(tmp_path)})
    try:
        small_losses(4, probe, ask_at=2, command="memory-snapshot")
    finally:
        probe.remove_hooks()
    results = sink.of(MemorySnapshotResult)
    assert len(results) == 2  # each request answered at once, none started
    assert all("CUDA is not initialised" in r.unavailable and not r.error for r in results)
    assert not sink.of(MemorySnapshotStarted) and not (tmp_path / "memory").exists()


# --- the real no-CUDA path: tuidebug run --detach + tuidebug memory -------------------------------


def test_tuidebug_memory_on_a_cpu_run_says_so_and_the_run_goes_on(run_env: dict[str, str]) -> None:
    run_id = start_detached(
        DEMOS / "classifier.py", "--steps", "100000", "--sleep", "0.005", "--eval-every", "0"
    )
    paths = find_run(run_id)
    assert paths is not None
    try:
        wait_for(lambda: paths.history.exists() and paths.socket.exists(), what="the run")
        text = subprocess.run(
            [*TUIDEBUG, "memory", run_id, "--steps", "3"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        as_json = subprocess.run(
            [*TUIDEBUG, "memory", run_id, "--json", "--timeout", "30"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        state = paths.read_meta().get("state")
    finally:
        asyncio.run(stop_run(run_id))
    assert text.returncode == NO_CUDA_EXIT, (text.stdout, text.stderr)
    assert "rank 0: CUDA is not initialised in this process" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr
    assert as_json.returncode == NO_CUDA_EXIT, as_json.stderr
    (answer,) = json.loads(as_json.stdout)
    assert answer["unavailable"] and not answer["error"] and not answer["path"]
    assert state == "running"  # the run went on
    assert not (paths.folder / "memory").exists()
    # No such run: 2, as for `tuidebug profile`.
    missing = subprocess.run(
        [*TUIDEBUG, "memory", "no-such-run"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert missing.returncode == 2 and "no run no-such-run" in missing.stderr


# --- the GPU check script, as far as this machine can run it ------------------------------------


def test_the_gpu_check_script_imports_quietly_and_stops_calmly_without_a_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util
    import sys

    path = ROOT / "tests" / "gpu" / "check_memory_snapshot.py"
    spec = importlib.util.spec_from_file_location("check_memory_snapshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_memory_snapshot", module)
    spec.loader.exec_module(module)  # importing it does nothing but define things
    assert not capsys.readouterr().out
    compile(module.TRAIN, module.SCRIPT_NAME, "exec")  # the training script it writes
    assert sum(module.MARK in line for line in module.TRAIN.splitlines()) == 1
    assert module.main([]) == 0  # no CUDA here: it says so and stops
    assert "no CUDA GPU here" in capsys.readouterr().out
