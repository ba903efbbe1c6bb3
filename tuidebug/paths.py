"""Where runs live on disk, and how to find them.

Two places, for two different lifetimes:
- the *state* directory keeps each run's folder (metadata, history, pty log) after the run ends:
  ``$TUIDEBUG_HOME`` or ``$XDG_STATE_HOME/tuidebug`` or ``~/.local/state/tuidebug``;
- the *runtime* directory holds the live sockets. Socket paths are limited to about 107 bytes,
  so it is short: ``$TUIDEBUG_RUNTIME_DIR`` or ``$XDG_RUNTIME_DIR/tuidebug`` or
  ``/tmp/tuidebug-<uid>``.

Both are created with mode 0700 and must belong to the current user: anyone who can reach a
run's socket can run code in it (the debugger), so a directory someone else made is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


class UnsafeDirectory(Exception):
    """A run directory exists but another user owns it, or others can read or write it."""


def _private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 if needed, and check that it is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise UnsafeDirectory(f"{path} belongs to uid {info.st_uid}, not to you ({os.getuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def state_home() -> Path:
    """The folder that keeps every run's folder."""
    override = os.environ.get("TUIDEBUG_HOME")
    if override:
        return _private_dir(Path(override))
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return _private_dir(Path(base) / "tuidebug")


def runtime_home() -> Path:
    """The folder for live sockets: short, private, per user."""
    override = os.environ.get("TUIDEBUG_RUNTIME_DIR")
    if override:
        return _private_dir(Path(override))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return _private_dir(Path(xdg) / "tuidebug")
    return _private_dir(Path("/tmp") / f"tuidebug-{os.getuid()}")


def new_run_id() -> str:
    """A run id that sorts by start time and is unique: ``20261130-041230-3fa2``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RunPaths:
    """The files of one run."""

    run_id: str
    folder: Path
    socket: Path

    @property
    def meta(self) -> Path:
        """JSON metadata: script, args, state, pids, exit code."""
        return self.folder / "meta.json"

    @property
    def token(self) -> Path:
        """The secret every client must present in its Hello (mode 0600)."""
        return self.folder / "token"

    @property
    def history(self) -> Path:
        """SQLite history of every step (WAL mode)."""
        return self.folder / "history.sqlite"

    @property
    def pty_log(self) -> Path:
        """Everything the script wrote to its terminal."""
        return self.folder / "output.log"

    @property
    def supervisor_log(self) -> Path:
        """The supervisor's own log (its stdout and stderr)."""
        return self.folder / "supervisor.log"

    @property
    def checkpoints(self) -> Path:
        """Where "save now" writes checkpoints for this run."""
        return self.folder / "checkpoints"

    def read_meta(self) -> dict[str, Any]:
        """The run's metadata, or an empty dict if it is missing or unreadable."""
        try:
            data = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_meta(self, data: dict[str, Any]) -> None:
        """Replace the metadata atomically, so a reader never sees half a file."""
        tmp = self.meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.meta)


def run_paths(run_id: str) -> RunPaths:
    """The paths of run ``run_id`` (the folder is created if missing)."""
    folder = _private_dir(state_home() / "runs" / run_id)
    socket = runtime_home() / f"{run_id}.sock"
    if len(str(socket).encode()) > MAX_SOCKET_PATH:
        raise UnsafeDirectory(
            f"socket path {socket} is too long for a Unix socket; set TUIDEBUG_RUNTIME_DIR "
            "to a shorter folder"
        )
    return RunPaths(run_id, folder, socket)


def runs_folder() -> Path:
    """The folder that holds one folder per run."""
    return state_home() / "runs"


def not_ours(folder: Path) -> str | None:
    """Why the entry ``folder`` of the runs folder is not this user's run to open or remove,
    or None when it is. A shared ``TUIDEBUG_HOME`` can hold other users' runs, and a symlink
    leads out of the runs folder: neither is touched (lstat, so a link is never followed)."""
    try:
        info = folder.lstat()
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.getuid():
        return f"belongs to uid {info.st_uid}, not to you ({os.getuid()})"
    return None


def scan_runs() -> tuple[list[RunPaths], list[tuple[Path, str]]]:
    """This user's runs, newest first; and the other entries of the runs folder, with why they
    were left alone (another owner, a symlink). A folder without meta.json is neither: a run
    being created, or not a run."""
    folder = runs_folder()
    if not folder.is_dir():
        return [], []
    ours: list[str] = []
    skipped: list[tuple[Path, str]] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name, reverse=True):
        if not entry.is_symlink() and not entry.is_dir():
            continue  # a stray file: not a run, nobody's to skip
        reason = not_ours(entry)
        if reason is not None:
            skipped.append((entry, reason))
        elif (entry / "meta.json").exists():
            ours.append(entry.name)
    runs = [run_paths(run_id) for run_id in ours]
    # An id sorts by its start second; two runs started in the same second (a script launching
    # jobs, a test) are told apart by the start time their meta.json records, read for those only.
    seconds = Counter(run.run_id[:15] for run in runs)
    runs.sort(
        key=lambda run: (
            run.run_id[:15],
            float(run.read_meta().get("created") or 0.0) if seconds[run.run_id[:15]] > 1 else 0.0,
        ),
        reverse=True,
    )
    return runs, skipped


def list_runs() -> list[RunPaths]:
    """Every run this user has, newest first."""
    return scan_runs()[0]


def match_runs(run_id: str, runs: list[RunPaths] | None = None) -> list[RunPaths]:
    """The runs ``run_id`` names: the one with exactly that id, else every run whose id starts
    with it (so more than one means the prefix is ambiguous)."""
    runs = list_runs() if runs is None else runs
    exact = [r for r in runs if r.run_id == run_id]
    if exact or not run_id:
        return exact
    return [r for r in runs if r.run_id.startswith(run_id)]


def find_run(run_id: str | None) -> RunPaths | None:
    """The run with this id (or unique id prefix), or the newest run when ``run_id`` is None."""
    if run_id is None:
        runs = list_runs()
        return runs[0] if runs else None
    matches = match_runs(run_id)
    return matches[0] if len(matches) == 1 else None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (someone else's counts: it might be ours under
    another uid after a setuid, and erring towards "alive" only keeps a run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
