"""The GPU panel's source: polls NVML (and the run's processes) in the supervisor.

NVML is polled here, about once a second (``gpu_interval`` in the run's options), in a worker
thread: never in the training process, where NVML calls (they serialise in the driver) could
stall training. Each poll becomes a :class:`GpuStats` with the pids of the run (the script and
its children: torchrun's ranks) and their RSS and CPU%, read with psutil here because that is
cheaper than in the training process.

No GPU is normal: the poller's snapshot then carries NVML's own reason; it is logged once, and
the console shows it in one line.

Tests and demos on machines without a GPU set ``TUIDEBUG_GPU_STANDIN`` to a JSON description of
stand-in GPUs (:mod:`tuidebug.gpu.standin`), e.g. ``{"gpus": [{"memory_used": 1073741824,
"processes": [{"pid": "script", "used_memory": 1073741824}]}]}`` (``"script"`` is replaced by
the script's pid), ``{"init_error": 9}`` or ``{"missing": ["nvmlDeviceGetPowerUsage"]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import psutil

from tuidebug.gpu.nvml import Nvml
from tuidebug.gpu.poller import GpuPoller
from tuidebug.supervisor.extensions import SupervisorApi
from tuidebug.wire.gpu_messages import GpuStats, ProcessStats

log = logging.getLogger("tuidebug.supervisor")

ENV_STANDIN = "TUIDEBUG_GPU_STANDIN"
MIN_INTERVAL = 0.2  # NVML polled faster than this has stalled drivers elsewhere


def standin_module(spec: dict[str, Any], script_pid: int) -> Any:
    """A :class:`~tuidebug.gpu.standin.StandInNvml` built from a JSON-able description."""
    from tuidebug.gpu.standin import StandInGpu, StandInNvml, StandInProcess

    gpus = []
    for gpu in spec.get("gpus", []):
        fields = {k: v for k, v in gpu.items() if k != "processes"}
        processes = [
            StandInProcess(
                pid=script_pid if p.get("pid") == "script" else int(p["pid"]),
                used_memory=p.get("used_memory"),
                name=p.get("name", "python"),
            )
            for p in gpu.get("processes", [])
        ]
        gpus.append(StandInGpu(**fields, processes=processes))
    return StandInNvml(
        gpus, init_error=spec.get("init_error"), missing=set(spec.get("missing", []))
    )


class RunProcesses:
    """The script and its descendants, with RSS and CPU% (psutil; called in a worker thread)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._procs: dict[int, psutil.Process] = {}  # kept so cpu_percent measures between polls

    def poll(self) -> list[ProcessStats]:
        try:
            root = psutil.Process(self.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        live: dict[int, psutil.Process] = {}
        for proc in found:
            proc = self._procs.get(proc.pid, proc)  # the same object: cpu_percent is a delta
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_percent(None)
            except psutil.Error:
                continue
            live[proc.pid] = proc
            out.append(ProcessStats(pid=proc.pid, rss=int(rss), cpu_percent=float(cpu)))
        self._procs = live
        return out


async def run(supervisor: SupervisorApi) -> None:
    interval = max(MIN_INTERVAL, float(supervisor.options.get("gpu_interval", 1.0) or 1.0))
    pid = int(getattr(supervisor.process, "pid", 0) or 0)
    module = None
    spec = os.environ.get(ENV_STANDIN)
    if spec:
        module = standin_module(json.loads(spec), pid)
        log.info("GPU: using the stand-in NVML module (%s)", ENV_STANDIN)
    poller = GpuPoller(Nvml(module), interval)
    processes = RunProcesses(pid)
    said_reason: str | None = None
    try:
        while True:
            started = asyncio.get_running_loop().time()
            snapshot, procs = await asyncio.to_thread(lambda: (poller.poll(), processes.poll()))
            if snapshot.reason and snapshot.reason != said_reason:
                log.info("GPU: %s", snapshot.reason)  # once per distinct reason, never per poll
                said_reason = snapshot.reason
            supervisor.publish(
                GpuStats(snapshot=snapshot, own_pids=[p.pid for p in procs], processes=procs)
            )
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, interval - elapsed))
    finally:
        poller.close()
