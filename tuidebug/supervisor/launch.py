"""Starting a run: the run's folder, its token, and its supervisor in a session of its own.

Used by ``tuidebug run`` and by the commands that run a script headless (``check``,
``lr-find``). Returns once the supervisor's socket exists, so a console or a client can connect.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from tuidebug.paths import RunPaths, new_run_id, run_paths
from tuidebug.wire.auth import write_token

SUPERVISOR_START_TIMEOUT = 15.0


class LaunchError(Exception):
    """The supervisor did not start; the message ends with its log."""


def start_supervised(
    script: str,
    script_args: Sequence[str],
    *,
    options: dict[str, Any],
    break_on: Sequence[str] = (),
    hold_on_error: bool = False,
) -> RunPaths:
    """Start ``script`` under a new supervisor (detached) and return the run's paths."""
    paths = run_paths(new_run_id())
    write_token(paths.token)
    paths.write_meta(
        {
            "run_id": paths.run_id,
            "script": script,
            "args": list(script_args),
            "cwd": os.getcwd(),
            "created": time.time(),
            "state": "starting",
            "break_on": list(break_on),
            "hold_on_error": hold_on_error,
            "options": options,
        }
    )
    with open(paths.supervisor_log, "ab") as log_file:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "tuidebug.supervisor", paths.run_id],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # neither SIGHUP nor the terminal's Ctrl-C reach it
        )
    deadline = time.monotonic() + SUPERVISOR_START_TIMEOUT
    while not paths.socket.exists():
        if supervisor.poll() is not None or time.monotonic() > deadline:
            tail = paths.supervisor_log.read_text(errors="replace")[-2000:]
            raise LaunchError(f"the supervisor did not start:\n{tail}")
        time.sleep(0.02)
    return paths
