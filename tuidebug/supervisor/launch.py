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


def job_launch(
    nproc_per_node: int,
    *,
    nnodes: str | None = None,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_backend: str | None = None,
    rdzv_id: str | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    standalone: bool = False,
    max_restarts: int | None = None,
) -> dict[str, Any]:
    """What the supervisor needs to start a torchrun job, as kept in the run's meta.json.

    The flags go to torchrun as given. With none that says where the ranks meet, the job is
    ``--standalone``: torchrun's rendezvous on a free local port, so two jobs on one machine
    (or two tests) never fight over torchrun's default port 29500."""
    args = ["--nproc-per-node", str(nproc_per_node)]
    for flag, value in (
        ("--nnodes", nnodes),
        ("--node-rank", node_rank),
        ("--rdzv-endpoint", rdzv_endpoint),
        ("--rdzv-backend", rdzv_backend),
        ("--rdzv-id", rdzv_id),
        ("--master-addr", master_addr),
        ("--master-port", master_port),
        ("--max-restarts", max_restarts),
    ):
        if value is not None:
            args += [flag, str(value)]
    meeting = (nnodes, rdzv_endpoint, rdzv_backend, master_addr, master_port)
    if standalone or all(value is None for value in meeting):
        args.append("--standalone")
    most_nodes = int(str(nnodes or "1").split(":")[-1])  # "MIN:MAX" for an elastic job
    return {
        "launcher": "torch.distributed.run",
        "nproc_per_node": nproc_per_node,
        "nnodes": nnodes or "1",
        "node_rank": node_rank or 0,
        "world_size": nproc_per_node * most_nodes,
        "torchrun_args": args,
    }


def start_supervised(
    script: str,
    script_args: Sequence[str],
    *,
    options: dict[str, Any],
    break_on: Sequence[str] = (),
    hold_on_error: bool = False,
    launch: dict[str, Any] | None = None,
) -> RunPaths:
    """Start ``script`` under a new supervisor (detached) and return the run's paths.

    ``launch`` (from ``job_launch``) makes the run a torchrun job: the supervisor starts
    ``torch.distributed.run`` with the probe's bootstrap as every rank's module."""
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
            "world_size": launch["world_size"] if launch else 1,
            "launch": launch,
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
