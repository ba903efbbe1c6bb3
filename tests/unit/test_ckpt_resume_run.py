"""``tuidebug run --resume`` end to end: a script without the hook object, through the real
supervisor, resumes bit for bit (losses read from the runs' stored histories)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support import ROOT, TUIDEBUG, wait_for

from tuidebug.paths import find_run
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire.checkpoint_messages import CheckpointRestored
from tuidebug.wire.codec import decode_body

SCRIPT = ROOT / "tests" / "scripts" / "ckpt_steady.py"


def run_detached(*args: str) -> str:
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", *args], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[0].split()[2]


def losses_of(run_id: str) -> tuple[dict[int, float], list[object]]:
    paths = find_run(run_id)
    assert paths is not None
    meta = wait_for(lambda: (m := paths.read_meta()).get("ended") and m, 60, what="run end")
    assert meta["exit_code"] == 0, paths.pty_log.read_text()[-2000:]
    store = HistoryStore(paths.history, readonly=True)
    try:
        points = [p for batch in store.iter_steps() for p in batch.points]
        events = [decode_body(body) for body in store.iter_event_bodies()]
    finally:
        store.close()
    return {p.step: p.loss for p in points if p.loss is not None}, events


def test_resume_through_tuidebug_run_is_bit_exact(run_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    first = run_detached("--save-every", "6", "--checkpoint-dir", str(folder), str(SCRIPT), "12")
    full, _ = losses_of(first)
    assert sorted(full) == list(range(1, 13))
    checkpoint = folder / "step-00000006.pt"
    assert checkpoint.is_file()

    second = run_detached("--resume", str(checkpoint), str(SCRIPT), "7")
    resumed, events = losses_of(second)
    # Step 1 ran from the fresh start before the optimizer was first seen; then the checkpoint
    # was applied at that boundary and the run went on from step 6.
    assert sorted(resumed) == [1, *range(7, 13)]
    for step in range(7, 13):
        assert resumed[step] == full[step], step
    (restored,) = [e for e in events if isinstance(e, CheckpointRestored)]
    assert restored.ok and restored.kind == "resume" and restored.discarded == 1
