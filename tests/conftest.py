"""Fixtures shared by the unit, UI and end-to-end tests.

Every test that starts runs gets its own state and runtime folders (short paths: a Unix socket
path must stay under ~107 bytes), so tests never see each other's runs or the user's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"
TUIDEBUG = [sys.executable, "-m", "tuidebug.cli"]


@pytest.fixture
def run_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A private TUIDEBUG_HOME and TUIDEBUG_RUNTIME_DIR, set in os.environ and returned."""
    base = Path(tempfile.mkdtemp(prefix="td-", dir="/tmp"))
    home, runtime = base / "h", base / "r"
    monkeypatch.setenv("TUIDEBUG_HOME", str(home))
    monkeypatch.setenv("TUIDEBUG_RUNTIME_DIR", str(runtime))
    yield {"TUIDEBUG_HOME": str(home), "TUIDEBUG_RUNTIME_DIR": str(runtime)}
    _stop_leftover_runs(home)
    shutil.rmtree(base, ignore_errors=True)


def _stop_leftover_runs(home: Path) -> None:
    """Kill the supervisors and scripts a failed test left behind."""
    import json
    import signal

    for meta_file in home.glob("runs/*/meta.json"):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("ended"):
            continue
        for key in ("pid", "supervisor_pid"):
            pid = meta.get(key)
            if isinstance(pid, int) and pid > 0:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def start_detached(script: str | Path, *args: str, cwd: Path | None = None) -> str:
    """``tuidebug run --detach script args``; returns the run id."""
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", str(script), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd or ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    return first.split()[2]  # "tuidebug: run <id> started (...)"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
