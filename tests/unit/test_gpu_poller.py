"""GpuPoller against a stand-in NVML module: several GPUs, a missing function, a GPU lost."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import msgspec
import pynvml
import pytest

from tuidebug.gpu.nvml import Nvml
from tuidebug.gpu.poller import GpuPoller
from tuidebug.gpu.snapshot import GpuSnapshot
from tuidebug.gpu.standin import GIB, Failure, StandInGpu, StandInNvml, StandInProcess


def _three_gpus(**kwargs: object) -> StandInNvml:
    return StandInNvml(
        [
            StandInGpu(
                memory_used=61 * GIB,
                utilization=97,
                memory_utilization=40,
                temperature=71,
                power_mw=350_500,
                processes=[
                    StandInProcess(4242, 30 * GIB, "python"),
                    StandInProcess(4343, 29 * GIB, "python"),
                ],
            ),
            StandInGpu(name="NVIDIA H200", memory_total=141 * GIB, memory_used=2 * GIB),
            StandInGpu(
                name="NVIDIA GeForce RTX 4090",
                memory_total=24 * GIB,
                memory_used=1 * GIB,
                processes=[
                    # The same pid with a compute and a graphics context: listed twice by NVML.
                    StandInProcess(77, 512 << 20, "blender"),
                    StandInProcess(77, 512 << 20, "blender", graphics=True),
                    StandInProcess(88, None, "Xorg", graphics=True),
                ],
            ),
        ],
        **kwargs,  # type: ignore[arg-type]
    )


def test_several_gpus() -> None:
    standin = _three_gpus()
    poller = GpuPoller(Nvml(module=standin), clock=lambda: 123.0)
    snap = poller.poll()
    assert snap.reason is None and snap.time == 123.0
    assert snap.driver_version == "550.54.15"
    assert [d.index for d in snap.devices] == [0, 1, 2]
    a100, h200, rtx = snap.devices
    assert a100.name == "NVIDIA A100-SXM4-80GB" and a100.uuid == "GPU-standin-0000"
    assert (a100.memory_used, a100.memory_total) == (61 * GIB, 80 * GIB)
    assert a100.memory_fraction == pytest.approx(61 / 80)
    assert (a100.utilization, a100.memory_utilization, a100.temperature) == (97, 40, 71)
    assert a100.power_w == pytest.approx(350.5) and a100.power_limit_w == pytest.approx(400.0)
    assert [(p.pid, p.used_memory, p.name) for p in a100.processes] == [
        (4242, 30 * GIB, "python"),
        (4343, 29 * GIB, "python"),
    ]
    assert h200.memory_total == 141 * GIB and h200.processes == [] and h200.error is None
    assert [(p.pid, p.used_memory, p.name) for p in rtx.processes] == [
        (77, 512 << 20, "blender"),
        (88, None, "Xorg"),
    ]
    assert snap.host.ram_total > 0


def test_static_facts_are_queried_once() -> None:
    standin = _three_gpus()
    poller = GpuPoller(Nvml(module=standin))
    for _ in range(10):
        poller.poll()
    assert standin.calls[("nvmlDeviceGetName", 0)] == 1
    assert standin.calls[("nvmlDeviceGetHandleByIndex", 0)] == 1
    assert standin.calls[("nvmlSystemGetDriverVersion", None)] == 1
    assert standin.calls[("nvmlSystemGetProcessName", None)] == 4  # one per distinct pid
    assert standin.calls[("nvmlDeviceGetMemoryInfo", 0)] == 10  # one memory call per poll


def test_missing_function_leaves_only_that_value_empty(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    standin = _three_gpus(
        missing={"nvmlDeviceGetPowerUsage"},
        # "Not Supported" is per device (a consumer GPU without a sensor), unlike "Function Not
        # Found", which NVML says of the whole library and which stops the calls everywhere.
        failures=[Failure("nvmlDeviceGetTemperature", 1, pynvml.NVML_ERROR_NOT_SUPPORTED)],
    )
    poller = GpuPoller(Nvml(module=standin))
    for _ in range(30):
        snap = poller.poll()
    assert all(d.power_w is None for d in snap.devices)
    assert all(d.power_limit_w == pytest.approx(400.0) for d in snap.devices)
    assert snap.devices[1].temperature is None and snap.devices[0].temperature == 71
    assert snap.devices[0].memory_used == 61 * GIB
    # One line per missing function, whatever the number of GPUs and polls.
    assert len([r for r in caplog.records if r.name == "tuidebug.gpu"]) == 2


def test_gpu_lost_mid_poll_keeps_going_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    # GPU 1 is lost on its 3rd memory query (the 3rd poll) and answers again from the 6th.
    standin = _three_gpus(
        failures=[Failure("nvmlDeviceGetMemoryInfo", 1, pynvml.NVML_ERROR_GPU_IS_LOST, 3, 5)]
    )
    poller = GpuPoller(Nvml(module=standin))
    snaps = [poller.poll() for _ in range(8)]
    errors = [s.devices[1].error for s in snaps]
    assert errors == [None, None, "GPU is lost", "GPU is lost", "GPU is lost", None, None, None]
    for s in snaps:
        assert len(s.devices) == 3 and s.reason is None
        assert s.devices[0].memory_used == 61 * GIB and s.devices[0].error is None
        assert s.devices[2].memory_used == 1 * GIB
    lost = snaps[2].devices[1]
    assert lost.name == "NVIDIA H200" and lost.memory_used is None and lost.utilization is None
    assert snaps[6].devices[1].memory_used == 2 * GIB
    # A lost GPU's handle is dropped and asked for again, so a reset GPU comes back.
    assert standin.calls[("nvmlDeviceGetHandleByIndex", 1)] == 4
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "GPU is lost" in warnings[0].getMessage()


def test_every_device_call_failing_is_contained() -> None:
    standin = _three_gpus(failures=[Failure("*", 2, pynvml.NVML_ERROR_UNKNOWN)])
    snap = GpuPoller(Nvml(module=standin)).poll()
    assert snap.devices[2].error == "Unknown Error" and snap.devices[2].name == ""
    assert snap.devices[0].error is None


def test_count_failing_after_init_is_a_reason() -> None:
    standin = _three_gpus(
        failures=[Failure("nvmlDeviceGetCount", None, pynvml.NVML_ERROR_UNKNOWN, 2)]
    )
    poller = GpuPoller(Nvml(module=standin))
    # The 1st count call is Nvml's own check at init; the poll's first count is the 2nd.
    assert poller.poll().reason == "NVML: Unknown Error"


def test_poll_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tuidebug.gpu")
    poller = GpuPoller(Nvml(module=_three_gpus()))

    def broken(index: int) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(poller, "_device", broken)
    snaps = [poller.poll() for _ in range(5)]
    assert all(s.reason == "GPU poll failed: a bug" and s.devices == [] for s in snaps)
    assert all(s.host.ram_total > 0 for s in snaps)
    assert len([r for r in caplog.records if r.name == "tuidebug.gpu"]) == 1


def test_snapshot_round_trips_through_msgpack() -> None:
    snap = GpuPoller(Nvml(module=_three_gpus())).poll()
    data = msgspec.msgpack.encode(snap)
    assert msgspec.msgpack.decode(data, type=GpuSnapshot) == snap
    assert msgspec.json.decode(msgspec.json.encode(snap), type=GpuSnapshot) == snap


def test_snapshots_async_iterator() -> None:
    poller = GpuPoller(Nvml(module=_three_gpus()), interval=0.01)

    async def take(n: int) -> list[GpuSnapshot]:
        out = []
        async for snap in poller.snapshots():
            out.append(snap)
            if len(out) == n:
                break
        return out

    snaps = asyncio.run(take(3))
    assert len(snaps) == 3 and snaps[0].time <= snaps[2].time


def test_poll_is_quick_with_eight_gpus() -> None:
    # Not a timing assertion (those belong in benchmarks/): a loose guard against a poll that
    # would do something silly such as sleeping in psutil.cpu_percent.
    poller = GpuPoller(Nvml(module=StandInNvml([StandInGpu() for _ in range(8)])))
    poller.poll()
    started = time.perf_counter()
    for _ in range(20):
        poller.poll()
    assert (time.perf_counter() - started) / 20 < 0.1


def test_gpu_package_imports_no_ui_and_no_torch() -> None:
    code = (
        "import sys; before = set(sys.modules); "
        "import tuidebug.gpu, tuidebug.gpu.poller, tuidebug.gpu.standin; "
        "new = set(sys.modules) - before; "
        "bad = sorted(m for m in new if m.split('.')[0] in ('textual', 'rich', 'torch')); "
        "print(bad)"
    )
    # `tuidebug/__init__` belongs to the probe side; measure what tuidebug.gpu adds on top of it.
    out = subprocess.run(
        [sys.executable, "-c", "import tuidebug; " + code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
