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
- :class:`MemorySnapshotStarted` / :class:`MemorySnapshotResult`: a CUDA memory snapshot asked
  for with ``Command("memory-snapshot", args={"steps": K})`` (allocation history recorded for K
  steps), and its top allocation sites.

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
    "MemorySite",
    "MemorySnapshotResult",
    "MemorySnapshotStarted",
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


class MemorySnapshotStarted(Message):
    """Allocation history is being recorded for the next ``steps`` steps (from ``step``'s
    boundary)."""

    retention: ClassVar[str] = "latest"

    steps: int


class MemorySite(msgspec.Struct, array_like=True):
    """One allocation site of a snapshot: where the script asked for the memory.

    ``site`` is the innermost frame outside torch, the standard library and the probe's own
    wrappers ("train.py:42 in forward"); ``user`` is False when there was none (then it is the
    innermost frame, or the probe's own code). Bytes are the allocator's (rounded) block sizes.
    """

    site: str
    live: int  # bytes live at the end of the recording (the snapshot's active blocks)
    peak: int  # most bytes of this site live at once during the recording
    allocs: int  # allocations during the recording
    allocated: int  # bytes allocated during the recording, freed or not
    user: bool = True


class MemorySnapshotResult(Message):
    """A finished snapshot: the pickle's path (``torch.cuda.memory._snapshot()``, what
    https://pytorch.org/memory_viz opens) and its top allocation sites by peak bytes.

    ``step`` is the last recorded step, ``first`` the first. ``live``/``reserved``: bytes
    allocated / held by the allocator's segments at the end; ``peak``: most bytes allocated at
    once during the recording; ``before``: bytes live at the end that were allocated before the
    recording began (no stack: the model's parameters, usually). ``unavailable`` is the calm
    reason nothing was recorded (no CUDA in the process); ``error`` a failure.
    """

    retention: ClassVar[str] = "latest"

    first: int
    path: str = ""
    file_bytes: int = 0
    sites: list[MemorySite] = msgspec.field(default_factory=list)
    live: int = 0
    reserved: int = 0
    peak: int = 0
    before: int = 0
    allocs: int = 0
    entries: int = 0  # trace entries read (alloc, free, segment ... events)
    truncated: bool = False  # the history's ring buffer was full: the oldest events are lost
    wall: float = 0.0  # seconds from the first recorded step's start to the last one's end
    overhead: float = 0.0  # seconds spent taking, writing and reading the snapshot
    unavailable: str = ""
    error: str = ""
