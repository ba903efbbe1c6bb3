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

_TESTS = Path(__file__).parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse two test files with one basename: pytest's default import mode collects only one
    of them ("import file mismatch") and the run dies in collection."""
    seen: dict[str, Path] = {}
    for path in sorted(_TESTS.rglob("test_*.py")):
        if path.name in seen:
            raise pytest.UsageError(
                f"two test files named {path.name}: {seen[path.name]} and {path}; rename one"
            )
        seen[path.name] = path


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
    # torchrun starts each rank in a session of its own: killing its group leaves the ranks
    # running (orphans training on, in CI, through every later test). Every process of the
    # test's runs has its TUIDEBUG_HOME in its environment.
    for pid in _processes_with_env(f"TUIDEBUG_HOME={home}"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _processes_with_env(entry: str) -> list[int]:
    """The pids (not this one) whose environment holds ``entry`` (``NAME=value``)."""
    wanted = entry.encode() + b"\0"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        pid = int(proc.name)
        if pid != os.getpid() and (environ.startswith(wanted) or b"\0" + wanted in environ):
            found.append(pid)
    return found
