"""The runs on disk: which are live, how much disk each takes, and removing the ended ones.

Behind ``tuidebug ls``, ``tuidebug rm`` and ``tuidebug gc`` (cli.py only parses and prints).
Removal is careful in three ways:

- never a live run: a run is live until its supervisor records the end in meta.json, or until
  neither its supervisor nor its script is alive (see ``is_live``);
- never another user's run, nor anything behind a symlink: ``paths.scan_runs`` leaves those out,
  and ``remove_run`` checks again (lstat) right before deleting;
- the bytes freed are those the folder took on disk (allocated blocks, as ``du`` counts them).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuidebug.console.formatting import format_value
from tuidebug.paths import RunPaths, match_runs, not_ours, pid_alive, scan_runs
from tuidebug.supervisor.store import HistoryStore
from tuidebug.units import fmt_bytes

# A run whose meta.json has no pids yet is being started: launch.py writes meta.json, then the
# supervisor binds its socket, starts the script and records both pids. Within this long of its
# creation such a run counts as live even before its socket exists (launch gives up after 15 s).
STARTING_GRACE = 60.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``, ``2w``; ValueError for anything else."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 45s")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def is_live(paths: RunPaths, meta: dict[str, Any] | None = None) -> bool:
    """True while the run may still be going, so its folder must stay.

    The supervisor records ``ended`` in meta.json once the script has exited: such a run is
    over. Before that, the run is live while its supervisor or its script is alive; the script
    outlives a killed supervisor and goes on writing to the run's log, and the socket is no
    proof either way (a killed supervisor leaves it behind; logind deletes XDG_RUNTIME_DIR, and
    the sockets with it, when the user's last SSH session closes, while the run goes on).
    """
    meta = paths.read_meta() if meta is None else meta
    if meta.get("ended"):
        return False
    pids = [meta.get(key) for key in ("supervisor_pid", "pid")]
    recorded = [pid for pid in pids if isinstance(pid, int) and pid > 0]
    if recorded:
        return any(pid_alive(pid) for pid in recorded)
    if paths.socket.exists():
        return True
    created = meta.get("created")
    return isinstance(created, (int, float)) and time.time() - created < STARTING_GRACE


def shown_state(paths: RunPaths, meta: dict[str, Any]) -> str:
    """The state to show: meta.json's, or "lost" for a run recorded as going that nothing runs."""
    state = str(meta.get("state", "?"))
    if not meta.get("ended") and not is_live(paths, meta):
        return "lost"  # the supervisor and the script died without recording an ending
    return state


def last_active(paths: RunPaths, meta: dict[str, Any]) -> float:
    """When the run was last going: its end, else its start (a lost run), else meta.json's
    modification time. A run's age for ``gc`` counts from here."""
    for key in ("ended", "started", "created"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    try:
        return paths.meta.stat().st_mtime
    except OSError:
        return 0.0


def command_line(meta: dict[str, Any]) -> str:
    """``train.py --lr 1e-3``: the script and its arguments, from meta.json."""
    return " ".join([str(meta.get("script", "?")), *map(str, meta.get("args", []))])


@dataclass(frozen=True)
class RunSummary:
    """What ``tuidebug ls`` and the console's compare picker show of a run, to choose one."""

    run_id: str
    state: str  # as shown_state says
    script: str
    args: tuple[str, ...]
    started: float | None
    exit_code: int | None
    last_step: int | None  # rank 0's last recorded step (None: no steps, or no history)
    final_loss: float | None  # rank 0's last recorded loss

    @property
    def command(self) -> str:
        """``train.py --lr 1e-3``."""
        return " ".join([self.script, *self.args])

    def command_fit(self, width: int) -> str:
        """The command in at most ``width`` characters: the whole of it if it fits, else the
        script's file name for its path, then the arguments cut with an ellipsis."""
        for text in (self.command, " ".join([os.path.basename(self.script), *self.args])):
            if len(text) <= width:
                return text
        return text[: max(0, width - 1)].rstrip() + "…"

    @property
    def state_text(self) -> str:
        """The state, with the exit code of a crash ("crashed 1"): one column for both."""
        if self.state == "crashed" and self.exit_code not in (None, 0):
            return f"crashed {self.exit_code}"
        return self.state

    def age(self, now: float | None = None) -> str:
        """How long ago it started, in one unit: ``45s``, ``12m``, ``3h``, ``2d``, ``5w``."""
        if not self.started:
            return "?"
        seconds = max(0.0, (time.time() if now is None else now) - self.started)
        for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{int(seconds // size)}{unit}"
        return f"{int(seconds)}s"

    @property
    def steps_text(self) -> str:
        """The last step, or a dash (no cell is empty: the table reads as columns)."""
        return "—" if self.last_step is None else str(self.last_step)

    @property
    def loss_text(self) -> str:
        return format_value(self.final_loss)


def summarize(paths: RunPaths, meta: dict[str, Any] | None = None) -> RunSummary:
    """A run's summary: meta.json, and the tail of its history (a few rows, so listing many
    runs stays quick; an unreadable history leaves the steps and loss empty)."""
    meta = paths.read_meta() if meta is None else meta
    started = meta.get("started") or meta.get("created")
    code = meta.get("exit_code")
    last_step: int | None = None
    final_loss: float | None = None
    if paths.history.exists():
        try:
            store = HistoryStore(paths.history, readonly=True)
            try:
                last_step, final_loss = store.tail(0)
            finally:
                store.close()
        except sqlite3.Error:
            pass  # a corrupt or half-written file: shown without steps, as a run without any
    return RunSummary(
        run_id=paths.run_id,
        state=shown_state(paths, meta),
        script=str(meta.get("script", "?")),
        args=tuple(map(str, meta.get("args", []))),
        started=float(started) if isinstance(started, (int, float)) else None,
        exit_code=code if isinstance(code, int) else None,
        last_step=last_step,
        final_loss=final_loss,
    )


def disk_usage(folder: Path) -> int:
    """Bytes ``folder`` takes on disk: allocated blocks of the folder and everything in it, as
    ``du`` counts them (each inode once, symlinks counted as links and never followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(path: str) -> None:
        nonlocal total
        try:
            info = os.lstat(path)
        except OSError:
            return  # removed while we walk (a live run's temporary file)
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        total += info.st_blocks * 512  # st_blocks is in 512-byte units on every POSIX system

    add(str(folder))
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            add(os.path.join(root, name))
    return total


class NotRemovable(Exception):
    """This run must stay (live, not ours) or could not be removed; the message says why."""


def remove_run(paths: RunPaths) -> int:
    """Delete an ended run's folder (and a socket a killed supervisor left); returns the bytes
    freed. Raises NotRemovable, with nothing deleted, for a live run or a folder that is not
    this user's; and when deleting fails part way, with what was freed so far in its message."""
    reason = not_ours(paths.folder)
    if reason is not None:
        raise NotRemovable(f"{paths.run_id}: {paths.folder} {reason}: left alone")
    meta = paths.read_meta()
    if is_live(paths, meta):
        raise NotRemovable(
            f"{paths.run_id} is live ({meta.get('state', '?')}): {how_to_stop(paths, meta)}"
        )
    before = disk_usage(paths.folder)
    try:
        # rmtree never follows a symlink inside the folder (it unlinks the link itself).
        shutil.rmtree(paths.folder)
    except OSError as error:
        left = disk_usage(paths.folder) if paths.folder.exists() else 0
        raise NotRemovable(
            f"{paths.run_id}: could not remove all of {paths.folder} ({error}); "
            f"freed {fmt_bytes(before - left)}"
        ) from error
    try:
        if stat.S_ISSOCK(paths.socket.lstat().st_mode):
            paths.socket.unlink()
    except OSError:
        pass  # no socket left behind: the usual case
    return before


def how_to_stop(paths: RunPaths, meta: dict[str, Any]) -> str:
    """What to do before a live run can be removed."""
    supervisor = meta.get("supervisor_pid")
    if isinstance(supervisor, int) and supervisor > 0 and pid_alive(supervisor):
        return (
            f"stop it first (`tuidebug attach {paths.run_id}`, then q and 'stop the run'; "
            f"or `kill {supervisor}`, which stops the script as Ctrl-C would)"
        )
    script = meta.get("pid")
    if isinstance(script, int) and script > 0:
        return f"its script still runs without its supervisor: stop it first (`kill {script}`)"
    return "it is starting: stop it once it runs, or wait for it to end"


@dataclass
class Resolved:
    """What the ids given to ``tuidebug rm`` name."""

    runs: list[RunPaths] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def resolve(ids: list[str]) -> Resolved:
    """The runs named by ids or unique id prefixes (the same matching as ``tuidebug attach``),
    each once; and a message for each id that names none, several, or someone else's."""
    runs, skipped = scan_runs()
    resolved = Resolved()
    for run_id in ids:
        matches = match_runs(run_id, runs)
        if len(matches) == 1:
            if matches[0] not in resolved.runs:
                resolved.runs.append(matches[0])
            continue
        if matches:
            names = ", ".join(r.run_id for r in matches[:5]) + (", ..." if len(matches) > 5 else "")
            resolved.problems.append(
                f"{run_id!r} matches {len(matches)} runs ({names}): give more of the id"
            )
            continue
        theirs = [(p, why) for p, why in skipped if p.name == run_id or p.name.startswith(run_id)]
        if theirs and run_id:
            path, why = theirs[0]
            resolved.problems.append(f"{path} {why}: left alone")
        else:
            resolved.problems.append(f"no run matches {run_id!r}; see `tuidebug ls`")
    return resolved


@dataclass
class GcPlan:
    """What ``tuidebug gc`` removes, and what it keeps that the user may wonder about."""

    remove: list[RunPaths] = field(default_factory=list)
    live: list[RunPaths] = field(default_factory=list)  # old enough and beyond --keep, but live
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not this user's
    total: int = 0  # this user's runs


def plan_gc(older_than: float, keep: int, now: float | None = None) -> GcPlan:
    """The ended runs beyond the newest ``keep`` (in ``tuidebug ls`` order) that were last
    going more than ``older_than`` seconds ago. Live runs count towards ``keep``."""
    now = time.time() if now is None else now
    runs, skipped = scan_runs()
    plan = GcPlan(skipped=skipped, total=len(runs))
    for paths in runs[max(keep, 0) :]:
        meta = paths.read_meta()
        if now - last_active(paths, meta) <= older_than:
            continue
        (plan.live if is_live(paths, meta) else plan.remove).append(paths)
    return plan
