"""Poll NVML and the host into a :class:`~tuidebug.gpu.snapshot.GpuSnapshot`.

The supervisor calls :meth:`GpuPoller.poll` about once a second, in a worker thread of its
asyncio loop (``await asyncio.to_thread(poller.poll)``, or ``async for snap in
poller.snapshots()``). Hence the rules: ``poll`` never raises, is quick (a handful of NVML calls
per GPU, static facts cached), and takes values several at a time where NVML allows (memory
used and total in one call, GPU and memory-controller utilisation in one call).

Never poll from the training process: NVML calls serialise in the driver, and polling too often
has caused stalls elsewhere. This module imports neither Textual, Rich nor torch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil

from tuidebug.gpu.nvml import DEVICE_GONE_CODES, NotAvailable, Nvml, is_na
from tuidebug.gpu.snapshot import GpuDevice, GpuProcess, GpuSnapshot, HostStats

__all__ = ["GpuPoller"]

logger = logging.getLogger("tuidebug.gpu")

_NVML_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU: the die sensor, as nvidia-smi shows it
_NVML_MEMORY_V2 = 0x02000028  # nvmlMemory_v2, when the binding does not export it


class GpuPoller:
    """Reads every GPU NVML sees, plus CPU and RAM, into one snapshot per call.

    ``interval`` is the period the supervisor should poll at (used by :meth:`snapshots`); the
    poller itself keeps no timer. ``clock`` gives the snapshot's time (injectable for tests).
    """

    def __init__(
        self,
        nvml: Nvml | None = None,
        interval: float = 1.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nvml = nvml if nvml is not None else Nvml()
        self.interval = interval
        self._clock = clock
        self._handles: dict[int, Any] = {}
        self._static: dict[int, tuple[str, str]] = {}  # index -> (name, uuid): they never change
        self._process_names: dict[int, str] = {}
        self._memory_v2: bool | None = None  # decided on the first device that answers
        self._driver_version: str | None = None
        self._logged: set[str] = set()
        # psutil's cpu_percent(None) measures since the previous call; the first call has no
        # previous one and returns 0.0, so prime it now rather than show a false 0% once.
        psutil.cpu_percent(interval=None)

    # --- public -----------------------------------------------------------------------------

    def poll(self) -> GpuSnapshot:
        """One snapshot of every GPU and of the host. Never raises.

        Blocking (NVML and psutil calls): run it in a worker thread. Not re-entrant: one poll at
        a time, which :meth:`snapshots` guarantees.
        """
        now = self._clock()
        host = self._host()
        try:
            return self._poll_gpus(now, host)
        except Exception as exc:  # a bug here must not take the supervisor's loop down
            if "poll" not in self._logged:
                self._logged.add("poll")
                logger.exception("GPU poll failed")
            return GpuSnapshot(time=now, host=host, reason=f"GPU poll failed: {exc}")

    async def snapshots(self) -> AsyncIterator[GpuSnapshot]:
        """Yield a snapshot every ``interval`` seconds, polling in a worker thread."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            yield await asyncio.to_thread(self.poll)
            # Keep the cadence: a slow poll shortens the next sleep instead of adding to it.
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def close(self) -> None:
        """Release NVML. The poller can still be called after, and reports no GPUs."""
        self.nvml.close()
        self._handles.clear()

    # --- host -------------------------------------------------------------------------------

    def _host(self) -> HostStats:
        try:
            vm = psutil.virtual_memory()
            return HostStats(
                cpu_percent=float(psutil.cpu_percent(interval=None)),
                ram_used=int(vm.total - vm.available),
                ram_total=int(vm.total),
                cpu_count=psutil.cpu_count() or 0,
            )
        except Exception as exc:  # psutil can fail in odd containers; CPU/RAM are best effort
            if "host" not in self._logged:
                self._logged.add("host")
                logger.warning("CPU/RAM unavailable: %s", exc)
            return HostStats()

    # --- GPUs -------------------------------------------------------------------------------

    def _poll_gpus(self, now: float, host: HostStats) -> GpuSnapshot:
        nvml = self.nvml
        if nvml.reason is not None:
            return GpuSnapshot(time=now, host=host, reason=nvml.reason)
        count = nvml.query("nvmlDeviceGetCount")
        if is_na(count):
            return GpuSnapshot(time=now, host=host, reason=f"NVML: {count.reason}")
        if count == 0:
            return GpuSnapshot(time=now, host=host, reason="NVML: no NVIDIA GPU found")
        if self._driver_version is None:
            version = nvml.query("nvmlSystemGetDriverVersion")
            self._driver_version = "" if is_na(version) else _text(version)
        devices = [self._device(index) for index in range(int(count))]
        seen = {p.pid for d in devices for p in d.processes}
        # Forget the names of processes that are gone: pids are reused.
        for pid in list(self._process_names):
            if pid not in seen:
                del self._process_names[pid]
        return GpuSnapshot(
            time=now, devices=devices, host=host, driver_version=self._driver_version or None
        )

    def _device(self, index: int) -> GpuDevice:
        nvml = self.nvml
        handle = self._handles.get(index)
        if handle is None:
            handle = nvml.query("nvmlDeviceGetHandleByIndex", index)
            if is_na(handle):
                return GpuDevice(index=index, error=handle.reason)
            self._handles[index] = handle

        static = self._static.get(index)
        if static is None:
            name = nvml.query("nvmlDeviceGetName", handle)
            uuid = nvml.query("nvmlDeviceGetUUID", handle)
            static = ("" if is_na(name) else _text(name), "" if is_na(uuid) else _text(uuid))
            if static[0] and static[1]:  # cache only a complete answer; retry otherwise
                self._static[index] = static

        memory = self._memory(handle)
        if is_na(memory):
            # Memory is the one value every GPU has: failing it means the device is not
            # answering. Drop the handle when NVML says it is gone, so a reset GPU comes back.
            if memory.code in DEVICE_GONE_CODES:
                self._handles.pop(index, None)
                self._static.pop(index, None)
            return GpuDevice(index=index, name=static[0], uuid=static[1], error=memory.reason)

        util = nvml.query("nvmlDeviceGetUtilizationRates", handle)
        temperature = nvml.query("nvmlDeviceGetTemperature", handle, _NVML_TEMPERATURE_GPU)
        power = nvml.query("nvmlDeviceGetPowerUsage", handle)  # milliwatts
        limit = nvml.query("nvmlDeviceGetEnforcedPowerLimit", handle)  # milliwatts
        return GpuDevice(
            index=index,
            name=static[0],
            uuid=static[1],
            memory_used=_int(getattr(memory, "used", None)),
            memory_total=_int(getattr(memory, "total", None)),
            utilization=None if is_na(util) else _int(getattr(util, "gpu", None)),
            memory_utilization=None if is_na(util) else _int(getattr(util, "memory", None)),
            temperature=None if is_na(temperature) else _int(temperature),
            power_w=None if is_na(power) else float(power) / 1000.0,
            power_limit_w=None if is_na(limit) else float(limit) / 1000.0,
            processes=self._processes(handle),
        )

    def _memory(self, handle: Any) -> Any:
        # The v2 query reports "used" without the driver's reserved memory, which is what
        # nvidia-smi shows on recent drivers; older drivers only have v1.
        nvml = self.nvml
        if self._memory_v2 is not False:
            module = nvml.module
            version = getattr(module, "nvmlMemory_v2", _NVML_MEMORY_V2)
            memory = nvml.query("nvmlDeviceGetMemoryInfo", handle, version=version)
            if not is_na(memory):
                self._memory_v2 = True
                return memory
            if self._memory_v2 is None and memory.code not in DEVICE_GONE_CODES:
                self._memory_v2 = False  # never worked: use v1 from now on
            else:
                return memory
        return nvml.query("nvmlDeviceGetMemoryInfo", handle)

    def _processes(self, handle: Any) -> list[GpuProcess]:
        used: dict[int, int | None] = {}
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            infos = self.nvml.query(fn, handle)
            if is_na(infos):
                continue
            for info in infos:
                pid = _int(getattr(info, "pid", None))
                if pid is None:
                    continue
                memory = _int(getattr(info, "usedGpuMemory", None))
                # A process with both a compute and a graphics context appears in both lists
                # with the same memory: merge instead of counting it twice.
                previous = used.get(pid)
                used[pid] = memory if previous is None else max(previous, memory or 0)
        return [
            GpuProcess(pid=pid, used_memory=memory, name=self._process_name(pid))
            for pid, memory in sorted(used.items())
        ]

    def _process_name(self, pid: int) -> str:
        name = self._process_names.get(pid)
        if name is not None:
            return name
        result = self.nvml.query("nvmlSystemGetProcessName", pid)
        name = "" if isinstance(result, NotAvailable) else _text(result)
        if not name:
            # NVML may refuse (no permission); psutil works for our own user's processes. In a
            # container the pid may belong to another namespace: then we show no name.
            try:
                name = psutil.Process(pid).name()
            except Exception:
                name = ""
        self._process_names[pid] = name
        return name


def _text(value: Any) -> str:
    # pynvml returns str or bytes depending on its version and the function.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any) -> int | None:
    if value is None or is_na(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
