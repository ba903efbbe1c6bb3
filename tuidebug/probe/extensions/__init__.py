"""Probe extensions: each module here has ``install(probe, options) -> None``.

The bootstrap installs every one when the probe is connected to a supervisor. ``options`` is
the dict of the run's options (``tuidebug run`` flags, e.g. ``budget``, ``stats_every``,
``save_every``); each extension reads the keys it knows. A failing extension is reported and
skipped: it must never stop the script.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")


def install_all(probe: Probe, options: dict[str, Any]) -> list[str]:
    """Install every extension; returns the names of those that failed."""
    failed = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        name = f"{__name__}.{info.name}"
        try:
            importlib.import_module(name).install(probe, options)
        except Exception as error:  # an extension must never stop the script
            log.warning("tuidebug: probe extension %s failed to install: %r", info.name, error)
            failed.append(info.name)
    return failed
