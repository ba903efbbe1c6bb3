"""GPU and host monitoring through NVML, for the supervisor to poll and the console to show.

- :mod:`tuidebug.gpu.nvml`: lazily initialised NVML whose queries never raise.
- :mod:`tuidebug.gpu.snapshot`: the msgspec structs one poll produces (wire-ready, untagged).
- :mod:`tuidebug.gpu.poller`: :class:`GpuPoller`, one snapshot per call, about 1 Hz.
- :mod:`tuidebug.gpu.history`: a bounded memory history for the panel's chart.

Nothing here imports Textual, Rich or torch; the console's widget lives in
``tuidebug.console.widgets.gpu_panel``.
"""

from __future__ import annotations

from tuidebug.gpu.history import MemoryHistory
from tuidebug.gpu.nvml import NA, NotAvailable, Nvml, is_na
from tuidebug.gpu.poller import GpuPoller
from tuidebug.gpu.snapshot import GpuDevice, GpuProcess, GpuSnapshot, HostStats

__all__ = [
    "NA",
    "GpuDevice",
    "GpuPoller",
    "GpuProcess",
    "GpuSnapshot",
    "HostStats",
    "MemoryHistory",
    "NotAvailable",
    "Nvml",
    "is_na",
]
