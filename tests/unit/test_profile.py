"""Profiler capture on demand: in process (the capture starts at a boundary, covers exactly K
steps, ends by itself and leaves the losses bit for bit as they were), and end to end through
``tuidebug profile RUN --steps K`` on the transformer demo under ``tuidebug run --detach``."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from support import DEMOS, ROOT, TUIDEBUG, Sink, small_losses, start_detached, stop_run, wait_for

from tuidebug.paths import find_run
from tuidebug.probe.extensions import profile
from tuidebug.probe.phases import PhaseClock
from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import Notice
from tuidebug.wire.phase_messages import ProfileResult, ProfileStarted


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2)])
def test_a_capture_covers_k_steps_ends_by_itself_and_changes_nothing(
    tmp_path: Path, rank: int, world_size: int
) -> None:
    bare = small_losses(8)
    sink = Sink()
    probe = Probe(sink, rank=rank, world_size=world_size)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    clock = PhaseClock(probe.send, 0, interval=0.0)
    probe.phases = clock
    probe.add_observer(clock)
    profile.install(probe, {"run_folder": str(tmp_path)})
    try:
        probed = small_losses(8, probe, ask_at=3, command="profile")
    finally:
        probe.remove_hooks()
    assert probed == bare  # bit for bit
    # Asked during step 3: it starts at step 3's boundary and covers steps 4, 5, 6.
    (started,) = sink.of(ProfileStarted)
    assert (started.step, started.steps) == (3, 3)
    (result,) = sink.of(ProfileResult)
    assert not result.error, result.error
    assert (result.first, result.step) == (4, 6)
    assert len(result.timeline) == 3 and all(row[-1] > 0 for row in result.timeline)
    assert any("running" in n.text for n in sink.of(Notice))  # the second request
    # It ended by itself: the phases are no longer marked.
    assert clock.marks is None and clock.capture is None and not clock.marking
    trace = json.loads(Path(result.trace).read_text())
    assert Path(result.trace).parent == tmp_path / "profiles"
    # In a job every rank writes its own trace of the same steps (none overwrites another's).
    assert Path(result.trace).name == ("profile-4-6-rank1.json" if rank else "profile-4-6.json")
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"tuidebug: step 4", "tuidebug: step 6", "tuidebug: forward"} <= names
    assert "tuidebug: step 7" not in names
    assert result.ops and result.ops[0].name in names


def test_tuidebug_profile_on_the_transformer_demo(run_env: dict[str, str]) -> None:
    run_id = start_detached(DEMOS / "transformer_lm.py", "--steps", "2000", "--sleep", "0.01")
    paths = find_run(run_id)
    assert paths is not None
    try:
        wait_for(lambda: paths.history.exists() and paths.socket.exists(), what="the run")
        proc = subprocess.run(
            [*TUIDEBUG, "profile", run_id, "--steps", "2", "--json"],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
        text = subprocess.run(
            [*TUIDEBUG, "profile", run_id, "--steps", "1"],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
    finally:
        asyncio.run(stop_run(run_id))
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["last"] - result["first"] == 1 and len(result["timeline"]) == 2
    trace_path = Path(result["trace"])
    assert trace_path.parent == paths.folder / "profiles"
    trace = json.loads(trace_path.read_text())  # a Chrome trace json.load reads
    top = result["ops"][0]["name"]
    assert top.startswith("aten::")
    ops = [e for e in trace["traceEvents"] if e.get("cat") == "cpu_op"]
    assert any(e["name"] == top for e in ops)
    # The printed form names the same kind of answer.
    assert text.returncode == 0, text.stderr
    assert "top operators by self CPU time:" in text.stdout and "aten::" in text.stdout
