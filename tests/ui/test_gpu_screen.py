"""The GPU & memory screen and the dashboard summary under Pilot, fed scripted messages.

GPU figures are made by hand (as the supervisor would send them from a stand-in NVML); layer
messages come from the real layers sampler on a small CPU model, so the activation memory shown
is the one the probe would produce.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import torch
from rich.console import Console
from test_dashboard import STARTED, ScriptedSource, history, run_info
from torch import nn

from tuidebug.console.app import TuidebugApp
from tuidebug.console.screens.gpu import GpuScreen
from tuidebug.console.widgets.gpu_summary import GpuSummary
from tuidebug.gpu.snapshot import GpuDevice, GpuProcess, GpuSnapshot, HostStats
from tuidebug.probe.layers import LayerSampler
from tuidebug.wire.gpu_messages import (
    AllocatorStats,
    DeviceMemory,
    GpuStats,
    OomMoment,
    ProcessStats,
)
from tuidebug.wire.messages import Command, HistoryDone, Message, ScriptError

GIB = 1 << 30
HOST = HostStats(cpu_percent=12.0, ram_used=20 * GIB, ram_total=64 * GIB, cpu_count=16)


def gpu_stats(t: int, used: int = 60 * GIB) -> GpuStats:
    device = GpuDevice(
        index=0,
        name="NVIDIA A100-SXM4-80GB",
        memory_used=used,
        memory_total=80 * GIB,
        utilization=91,
        temperature=64,
        power_w=310.0,
        power_limit_w=400.0,
        processes=[GpuProcess(pid=42, used_memory=used, name="python")],
    )
    snap = GpuSnapshot(time=STARTED + t, devices=[device], host=HOST, driver_version="550.54.15")
    return GpuStats(
        snapshot=snap,
        own_pids=[42],
        processes=[ProcessStats(pid=42, rss=3 * GIB, cpu_percent=98.0)],
    )


def allocator() -> AllocatorStats:
    return AllocatorStats(
        step=500,
        pid=42,
        devices=[
            DeviceMemory(
                device=0,
                allocated=58 * GIB,
                reserved=62 * GIB,
                peak=74 * GIB,
                peak_since_reset=70 * GIB,
                total=80 * GIB,
            )
        ],
        batch="(256×3×224×224)",
    )


def layer_messages() -> list[Message]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 256), nn.GELU()), nn.Linear(256, 4)
    )
    out: list[Message] = []
    sampler = LayerSampler(out.append, 0, every=1)
    sampler.add_model("net", model)
    for step in (1, 2):  # the sampler arms its hooks at a boundary, for the next step
        model(torch.randn(32, 8)).sum().backward()
        sampler.on_boundary(step, time.perf_counter(), None)
    sampler.close()
    return out


def oom_error(held: bool = True) -> ScriptError:
    return ScriptError(
        step=500,
        exc_type="OutOfMemoryError",
        text="CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 80 GiB",
        traceback="Traceback ...",
        held=held,
    )


def scripted(oom: bool) -> list[list[Message]]:
    batches: list[list[Message]] = [
        [run_info(), *history(500), HistoryDone(steps=500)],
        [gpu_stats(t, (40 + t) * GIB) for t in range(20)] + [allocator(), *layer_messages()],
    ]
    if oom:
        batches.append(
            [
                OomMoment(
                    step=500,
                    device=0,
                    requested=2 * GIB,
                    device_allocated=76 * GIB,
                    device_free=GIB,
                ),
                oom_error(),
            ]
        )
    return batches


def _text(widget: Any) -> str:
    console = Console(width=100, record=True)
    console.print(widget.content)
    return console.export_text()


def test_dashboard_summary_and_the_screen_with_its_keys() -> None:
    async def scenario() -> None:
        source = ScriptedSource(scripted(oom=False))
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause(0.4)
            summary = app.screen.query_one(GpuSummary)
            assert summary.display
            text = _text(summary)
            assert "GPU0" in text and "59.0/80.0 GiB" in text and "91%" in text
            assert "rank 0 cuda:0 alloc 58.00 GiB" in text
            await pilot.press("G")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, GpuScreen)
            alloc = _text(screen.query_one("#gpu-allocator"))
            assert "peak 74.00 GiB (since reset 70.00 GiB)" in alloc
            assert "RSS   3.00 GiB" in alloc and "98.0%" in alloc
            layers = _text(screen.query_one("#gpu-layers"))
            # Batch 32: the inner block holds Linear(64, 256) and GELU outputs (32×256 float32
            # each); checkpointing it frees one of them.
            assert "checkpointing would save most in" in layers
            assert "32.0 KiB  net.2" in layers
            assert not screen.query_one("#gpu-oom").display
            await pilot.press("R")
            await pilot.press("S")
            names = [m.name for m in source.sent if isinstance(m, Command)]
            assert names == ["memory-reset-peak", "memory-snapshot"]
            await pilot.press("escape")
            assert not isinstance(app.screen, GpuScreen)

    asyncio.run(scenario())


def test_no_gpu_dashboard_shows_the_calm_reason_with_cpu_and_ram() -> None:
    async def scenario() -> None:
        reason = "NVML: NVML Shared Library Not Found"
        stats = GpuStats(snapshot=GpuSnapshot(time=STARTED, reason=reason, host=HOST))
        source = ScriptedSource([[run_info(), *history(50), HistoryDone(steps=50), stats]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.4)
            text = _text(app.screen.query_one(GpuSummary))
            assert "no GPU" in text and reason in text
            assert "CPU" in text and "RAM" in text
            await pilot.press("G")
            await pilot.pause(0.2)
            alloc = _text(app.screen.query_one("#gpu-allocator"))
            assert "CUDA not initialised" in alloc

    asyncio.run(scenario())


def test_an_out_of_memory_error_opens_the_report() -> None:
    async def scenario() -> None:
        app = TuidebugApp(source=ScriptedSource(scripted(oom=True)))
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause(0.5)
            screen = app.screen
            assert isinstance(screen, GpuScreen)  # jumped open by itself
            oom = screen.query_one("#gpu-oom")
            assert oom.display
            text = _text(oom)
            assert "OUT OF MEMORY at step 500 (rank 0)" in text
            assert "failing allocation: 2.00 GiB on cuda:0" in text
            assert "alloc 58.00 GiB" in text and "peak 74.00 GiB of 80.00 GiB" in text
            assert "batch (256×3×224×224)" in text
            assert "net.2" in text  # the biggest block by activation memory
            assert "smaller batch" in text and "checkpointing" in text
            assert "mixed precision" in text
            assert "d: post-mortem debugger" in text
            await pilot.press("escape")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, GpuScreen)  # it does not jump back

    asyncio.run(scenario())


def test_gpu_screen_snapshot(snap_compare: Any) -> None:
    async def open_screen(pilot: Any) -> None:
        await pilot.pause(0.4)
        await pilot.press("G")
        await pilot.pause(0.3)

    assert snap_compare(
        TuidebugApp(source=ScriptedSource(scripted(oom=False), live=False)),
        terminal_size=(80, 24),
        run_before=open_screen,
    )
