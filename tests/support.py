"""Helpers shared by the tests (import them from here, never from conftest)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"
TUIDEBUG = [sys.executable, "-m", "tuidebug.cli"]


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
