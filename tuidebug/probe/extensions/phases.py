"""The step-time breakdown in the probe (tuidebug/probe/phases.py), always on.

Options: ``phases`` (False turns it off: the benchmark's "breakdown off"), ``phases_interval``
(seconds between two ``StepPhases`` messages, default 0.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuidebug.probe.phases import PhaseClock

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe


def install(probe: Probe, options: dict[str, Any]) -> None:
    if not options.get("phases", True):
        return
    clock = PhaseClock(probe.send, probe.rank, interval=float(options.get("phases_interval", 0.5)))
    probe.phases = clock
    probe.add_observer(clock)
