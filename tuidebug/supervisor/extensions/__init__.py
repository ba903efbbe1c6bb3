"""Supervisor extensions: each module here has ``async def run(supervisor: SupervisorApi)``.

Each runs as a task on the supervisor's loop from the script's start until it exits (then it
is cancelled). It publishes what it learns with ``supervisor.publish(message)`` and reads the
run's options from ``supervisor.options``. Blocking work (NVML, psutil) goes to a thread with
``asyncio.to_thread``. A failing extension is logged and the run goes on. Extensions see the
supervisor only through :class:`SupervisorApi`, so they do not depend on the server module
(which starts them). An extension that reacts to what probes or consoles send registers a
listener (``listen``) and talks to the probes with ``send_to_probes``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tuidebug.paths import RunPaths
from tuidebug.wire.messages import Command, Message

log = logging.getLogger("tuidebug.supervisor")


class SupervisorApi(Protocol):
    """What an extension may use of the run's supervisor."""

    options: dict[str, Any]
    """The run's options (``tuidebug run`` flags)."""
    process: Any
    """The script's process (``pid``), once it started."""
    paths: RunPaths
    """The run's files (its folder)."""

    def publish(self, message: Message) -> None:
        """Send ``message`` to every console, kept for later ones as its kind says."""

    def listen(self, listener: Callable[[Message, bool], None]) -> None:
        """Call ``listener(message, from_probe)`` with every message a probe sends (its rank
        set) and every message a console sends, before the supervisor acts on it. It runs
        on the loop: it must be quick and never block."""

    def probe_pids(self) -> dict[int, int]:
        """The connected probes: rank -> pid."""

    def send_to_probes(self, command: Command) -> None:
        """Send ``command`` to the probe of ``command.rank`` (-1: every probe)."""


def start_all(supervisor: SupervisorApi) -> list[asyncio.Task[None]]:
    """Start every extension's task."""
    tasks = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        try:
            run: Callable[[SupervisorApi], Awaitable[None]] = importlib.import_module(
                f"{__name__}.{info.name}"
            ).run
        except Exception:
            log.exception("supervisor extension %s failed to load", info.name)
            continue
        tasks.append(asyncio.create_task(_guard(info.name, run(supervisor))))
    return tasks


async def _guard(name: str, work: Awaitable[None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("supervisor extension %s failed; the run goes on", name)
