"""What one GPU poll saw: plain msgspec structs, ready to be carried inside a wire message.

They are deliberately not tagged: the wire layer wraps a :class:`GpuSnapshot` in a message of its
own (``class Gpu(Message): snapshot: GpuSnapshot``), and a tag here would only add bytes.
Values that NVML could not give are ``None`` (never NVML's N/A object, which does not encode).
Memory is in bytes, power in watts, temperature in °C, utilisation and CPU in percent.

Compatibility: new fields are added with defaults, at the end (the rule of ``tuidebug.wire``).
"""

from __future__ import annotations

import msgspec

__all__ = ["GpuDevice", "GpuProcess", "GpuSnapshot", "HostStats"]


class GpuProcess(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A process with a context on a GPU, as NVML lists it (compute and graphics merged)."""

    pid: int
    used_memory: int | None = None  # bytes; None where the driver cannot tell (e.g. WDDM)
    name: str = ""


class GpuDevice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One GPU at poll time. ``error`` is set when the device stopped answering (e.g. lost)."""

    index: int
    name: str = ""
    uuid: str = ""
    memory_used: int | None = None
    memory_total: int | None = None
    utilization: int | None = None  # GPU busy percent over NVML's last sample period
    temperature: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: list[GpuProcess] = []
    memory_utilization: int | None = None  # memory-controller busy percent
    error: str | None = None

    @property
    def memory_fraction(self) -> float | None:
        """Memory used over total, in [0, 1]; None when either is unknown."""
        if self.memory_used is None or not self.memory_total:
            return None
        return min(1.0, max(0.0, self.memory_used / self.memory_total))


class HostStats(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The machine's CPU and RAM, always filled (CPU-only machines show these instead of GPUs)."""

    cpu_percent: float = 0.0
    ram_used: int = 0  # bytes: total minus available, the figure `free` and htop show as used
    ram_total: int = 0
    cpu_count: int = 0


class GpuSnapshot(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One poll: the GPUs, or the one calm reason there are none, and the host's CPU and RAM."""

    time: float  # wall clock, seconds since the epoch
    devices: list[GpuDevice] = []
    reason: str | None = None  # why ``devices`` is empty (no driver, no library...); None if fine
    host: HostStats = msgspec.field(default_factory=HostStats)
    driver_version: str | None = None
