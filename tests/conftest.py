"""Fixtures shared by the unit, UI and end-to-end tests.

Every test that starts runs gets its own state and runtime folders (short paths: a Unix socket
path must stay under ~107 bytes), so tests never see each other's runs or the user's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
