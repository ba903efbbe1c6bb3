"""Messages of the GPU and memory feature (issue 6): NVML polls, torch allocator figures,
optimizer-state bytes and the allocator's out-of-memory moment.

- :class:`GpuStats` comes from the supervisor (NVML is polled there, never in the training
  process), about once a second; only the newest is kept for late consoles.
- :class:`AllocatorStats` comes from each rank's probe, about once a second while CUDA is
  initialised (nothing otherwise); newest per rank kept.
- :class:`ParamMemory` comes from each rank's probe after the first step and whenever the
  optimizer's state grows: bytes of each parameter, its gradient and its optimizer state.
- :class:`OomMoment` is sent from the CUDA allocator's out-of-memory observer, the instant an
  allocation fails (before the exception reaches the script); stored in the history.

The OOM report itself is not a message: the console builds it when a ``ScriptError`` says "out of
memory", from the latest allocator figures, the ``OomMoment`` and the layer shapes it already
holds (see ``tuidebug.console.memory_model``).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tuidebug.gpu.snapshot import GpuSnapshot
from tuidebug.wire.messages import Message

__all__ = [
    "AllocatorStats",
    "DeviceMemory",
    "GpuStats",
    "OomMoment",
    "ParamMemory",
    "ProcessStats",
]


class ProcessStats(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One of the run's processes as psutil sees it (read by the supervisor, not the script)."""

    pid: int
    rss: int = 0  # bytes
    cpu_percent: float = 0.0  # of one core, since the previous poll (may pass 100)


class GpuStats(Message):
    """One NVML poll by the supervisor, with the run's own pids and their RSS/CPU%."""

    retention: ClassVar[str] = "latest"

    snapshot: GpuSnapshot
    own_pids: list[int] = msgspec.field(default_factory=list)
    processes: list[ProcessStats] = msgspec.field(default_factory=list)


class DeviceMemory(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The torch caching allocator's figures for one device, in bytes (host-side counters)."""

    device: int
    allocated: int = 0
    reserved: int = 0
    peak: int = 0  # since the process started (our own running maximum across resets)
    peak_since_reset: int = 0  # torch's own peak, since the last reset_peak_memory_stats
    total: int = 0  # the device's memory as torch sees it (0: unknown)


class AllocatorStats(Message):
    """A rank's allocator figures; ``pid`` ties them to a process in :class:`GpuStats`."""

    retention: ClassVar[str] = "latest"

    devices: list[DeviceMemory]
    pid: int = 0
    time: float = 0.0
    batch: str = ""  # the shapes a root model was last called with, e.g. "(64×3×224×224)"


class ParamMemory(Message):
    """Bytes per parameter tensor, by qualified name: the tensor, its gradient, optimizer state.

    ``names`` are the names the layers sampler uses (``LayerTable.param_names``), so the console
    can add them up per layer. Sizes come from tensor metadata (numel × element size).
    """

    retention: ClassVar[str] = "latest"

    names: list[str]
    params: list[int]
    grads: list[int]
    state: list[int]
    optimizer: str = ""


class OomMoment(Message):
    """The CUDA allocator failed an allocation (sent from its OOM observer, before the raise)."""

    device: int
    requested: int  # bytes the failing allocation asked for
    device_allocated: int = 0  # bytes the allocator had on that device
    device_free: int = 0  # bytes the driver said were free
