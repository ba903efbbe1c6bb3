"""A stand-in for the ``pynvml`` module: same function names, GPUs that live in memory.

For tests and demos on machines without an NVIDIA GPU (``Nvml(module=StandInNvml(...))``). It
is not a simulation of a GPU: it returns the figures it is given, and raises pynvml's own
``NVMLError`` subclasses where a test asks for a failure, so error texts are NVML's.

Failures a test can ask for:
- ``init_error``: nvmlInit raises that NVML code (no driver, no permission...).
- ``missing``: functions this "binding" does not have (AttributeError, like an old pynvml).
- ``failures``: a :class:`Failure` raises a code from the n-th call of a function on a device
  (``function="*"`` for every device function), e.g. the GPU lost on the third poll.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

__all__ = ["Failure", "StandInGpu", "StandInNvml", "StandInProcess"]

GIB = 1 << 30


@dataclass
class StandInProcess:
    pid: int
    used_memory: int | None
    name: str = "python"
    graphics: bool = False  # listed by nvmlDeviceGetGraphicsRunningProcesses instead of compute


@dataclass
class StandInGpu:
    name: str = "NVIDIA A100-SXM4-80GB"
    uuid: str = ""
    memory_total: int = 80 * GIB
    memory_used: int = 0
    utilization: int = 0
    memory_utilization: int = 0
    temperature: int = 40
    power_mw: int = 60_000
    power_limit_mw: int = 400_000
    processes: list[StandInProcess] = field(default_factory=list)


@dataclass
class Failure:
    """Raise NVML error ``code`` from call number ``first`` (1-based) to ``last`` (inclusive)."""

    function: str  # an nvml function name, or "*" for any function taking a device handle
    index: int | None  # device index, or None for any device
    code: int
    first: int = 1
    last: int | None = None


@dataclass(frozen=True)
class _Handle:
    index: int


class StandInNvml:
    """A stand-in for the pynvml module, holding a list of :class:`StandInGpu`."""

    NVMLError = pynvml.NVMLError
    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def __init__(
        self,
        gpus: list[StandInGpu] | None = None,
        *,
        init_error: int | None = None,
        missing: set[str] | frozenset[str] = frozenset(),
        failures: list[Failure] | None = None,
        driver_version: str = "550.54.15",
    ) -> None:
        self.gpus = gpus if gpus is not None else []
        for i, gpu in enumerate(self.gpus):
            gpu.uuid = gpu.uuid or f"GPU-standin-{i:04d}"
        self.init_error = init_error
        self.missing = set(missing)
        self.failures = failures or []
        self.driver_version = driver_version
        self.calls: Counter[tuple[str, int | None]] = Counter()
        self.initialised = False

    def __getattribute__(self, name: str) -> Any:
        # Functions listed in `missing` behave as if this binding never had them.
        if name.startswith("nvml") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    # --- bookkeeping ------------------------------------------------------------------------

    def _enter(self, function: str, index: int | None) -> None:
        key = (function, index)
        self.calls[key] += 1
        n = self.calls[key]
        for f in self.failures:
            if f.function not in (function, "*") or (f.function == "*" and index is None):
                continue
            if f.index is not None and f.index != index:
                continue
            if n >= f.first and (f.last is None or n <= f.last):
                raise pynvml.NVMLError(f.code)

    def _gpu(self, function: str, handle: _Handle) -> StandInGpu:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self._enter(function, handle.index)
        return self.gpus[handle.index]

    # --- the pynvml functions the poller uses -------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit", None)
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion", None)
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount", None)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(
            total=gpu.memory_total,
            used=gpu.memory_used,
            free=gpu.memory_total - gpu.memory_used,
            reserved=0,
        )

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=gpu.utilization, memory=gpu.memory_utilization)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._gpu("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [_proc(p) for p in gpu.processes if not p.graphics]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return [_proc(p) for p in gpu.processes if p.graphics]

    def nvmlSystemGetProcessName(self, pid: int) -> bytes:
        self._enter("nvmlSystemGetProcessName", None)
        for gpu in self.gpus:
            for p in gpu.processes:
                if p.pid == pid:
                    return p.name.encode()  # bytes, as older pynvml versions return
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)


def _proc(p: StandInProcess) -> Any:
    return SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_memory)
