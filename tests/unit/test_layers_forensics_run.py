"""NaN forensics end to end: `tuidebug run --detach` on a script with a data-dependent NaN at a
known, unsampled step names the module where it was born (not the first layer whose weights
the update turned into NaN), with its step, in the run's stored events."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from support import ROOT, TUIDEBUG, wait_for

from tuidebug.paths import find_run
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire.client import RunConnection
from tuidebug.wire.codec import decode_body
from tuidebug.wire.layer_messages import NonFinite
from tuidebug.wire.messages import Command

SCRIPT = ROOT / "tests" / "scripts" / "layers_nan_data.py"


def _start(*args: str) -> str:
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[0].split()[2]


def _nonfinite(history: Path) -> list[NonFinite]:
    if not history.exists():
        return []
    store = HistoryStore(history, readonly=True)
    try:
        messages = [decode_body(body) for body in store.iter_event_bodies()]
    finally:
        store.close()
    return [m for m in messages if isinstance(m, NonFinite)]


async def _stop(run_id: str) -> None:
    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths)
    connection.send(Command(name="stop-run", rank=-1))
    await asyncio.sleep(0.2)
    connection.close()


@pytest.mark.parametrize(("mode", "source"), [("forward", "forward"), ("backward", "backward")])
def test_detached_run_names_the_culprit_module_and_step(
    run_env: dict[str, str], mode: str, source: str
) -> None:
    # Default budget: step 40 is (almost surely) not a sampled step; the run pauses there.
    run_id = _start(str(SCRIPT), "400", "40", mode)
    paths = find_run(run_id)
    assert paths is not None
    try:
        reports = wait_for(lambda: _nonfinite(paths.history), timeout=40, what="a NonFinite")
    finally:
        asyncio.run(_stop(run_id))
    first = reports[0]
    assert first.located and first.paused
    assert (first.step, first.source, first.name) == (40, source, "model.feature")
    assert first.found_step == 40
