"""The GPU panel in a real (headless) Textual app at 80x24, fed with stand-in snapshots."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import pytest
from textual.app import App, ComposeResult

from tuidebug.console.widgets.gpu_panel import GpuPanel
from tuidebug.gpu.nvml import Nvml
from tuidebug.gpu.poller import GpuPoller
from tuidebug.gpu.snapshot import GpuSnapshot, HostStats
from tuidebug.gpu.standin import GIB, Failure, StandInGpu, StandInNvml, StandInProcess

SIZE = (80, 24)
# Fixed host figures, so that what is drawn does not depend on this machine's load.
HOST = HostStats(cpu_percent=12.0, ram_used=5 * GIB, ram_total=16 * GIB, cpu_count=8)


def _standin() -> StandInNvml:
    return StandInNvml(
        [
            StandInGpu(
                memory_used=61 * GIB,
                utilization=97,
                temperature=71,
                power_mw=350_000,
                processes=[
                    StandInProcess(4242, 30 * GIB, "python"),
                    StandInProcess(5151, 29 * GIB, "python"),
                    StandInProcess(999, 1 * GIB, "jupyter"),
                ],
            ),
            StandInGpu(name="NVIDIA H200", memory_total=141 * GIB, memory_used=2 * GIB),
            StandInGpu(name="NVIDIA A100-SXM4-80GB", memory_used=10 * GIB),
        ],
        missing={"nvmlDeviceGetPowerUsage"},
        failures=[Failure("nvmlDeviceGetMemoryInfo", 2, 15, first=3)],  # GPU 2 lost on poll 3
    )


def _snapshots(n: int) -> list[GpuSnapshot]:
    """``n`` polls of the stand-in, at fixed times and with a fixed host, memory rising on GPU 0."""
    standin = _standin()
    clock = iter(float(t) for t in range(1000, 2000))
    poller = GpuPoller(Nvml(module=standin), clock=lambda: next(clock))
    out = []
    for i in range(n):
        standin.gpus[0].memory_used = (10 + 6 * i) * GIB
        out.append(msgspec.structs.replace(poller.poll(), host=HOST))
    return out


def sync(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test with asyncio.run: no async pytest plugin is installed here."""

    @functools.wraps(fn)
    def wrapper() -> None:
        asyncio.run(fn())

    return wrapper


class PanelApp(App[None]):
    def __init__(self, panel: GpuPanel) -> None:
        super().__init__()
        self.panel = panel

    def compose(self) -> ComposeResult:
        yield self.panel


def _text(panel: GpuPanel) -> str:
    return "\n".join(panel.render_line(y).text.rstrip() for y in range(panel.size.height))


@sync
async def test_no_gpu_here_for_real() -> None:
    poller = GpuPoller(Nvml())  # the real pynvml on this machine
    snap = poller.poll()
    if snap.devices:
        pytest.skip("this machine has a GPU")
    panel = GpuPanel(snap)
    async with PanelApp(panel).run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = _text(panel)
        lines = text.splitlines()
        # Compact (dashboard) form: one line, the reason then CPU and RAM.
        assert len(lines) == 1 and lines[0].startswith("no GPU · NVML: ")
        assert snap.reason is not None and snap.reason in lines[0]
        assert "CPU" in lines[0] and "RAM" in lines[0]
        assert all(len(line) <= 80 for line in lines)
        panel.detailed = True
        await pilot.pause()
        lines = _text(panel).splitlines()
        assert lines[1].startswith("CPU") and lines[2].startswith("RAM") and "GiB" in lines[2]


@sync
async def test_compact_form() -> None:
    snaps = _snapshots(3)
    panel = GpuPanel()
    async with PanelApp(panel).run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "waiting for the first poll" in _text(panel)
        panel.snapshot = snaps[0]
        await pilot.pause()
        lines = _text(panel).splitlines()
        assert len(lines) == 4, lines
        assert (
            lines[0].startswith("GPU0 ") and "10.0/80.0 GiB" in lines[0] and "util  97%" in lines[0]
        )
        assert "A100-SXM4-80GB" in lines[0]
        assert "2.0/141.0 GiB" in lines[1] and "H200" in lines[1]
        assert lines[3].startswith("CPU  12%") and "RAM 5.0/16.0 GiB (31%)" in lines[3]
        # An update repaints in place: same widget, no children composed.
        panel.snapshot = snaps[2]
        await pilot.pause()
        lines = _text(panel).splitlines()
        assert "22.0/80.0 GiB" in lines[0]
        assert lines[2].startswith("GPU2 ✗ GPU is lost")
        assert app_children(panel) == 0
        assert all(len(line) <= 80 for line in lines)


def app_children(panel: GpuPanel) -> int:
    return len(panel.children)


@sync
async def test_detailed_form_marks_own_pids_and_draws_history() -> None:
    snaps = _snapshots(12)
    panel = GpuPanel(detailed=True, own_pids={4242})
    async with PanelApp(panel).run_test(size=SIZE) as pilot:
        for snap in snaps:
            panel.snapshot = snap
        await pilot.pause()
        text = _text(panel)
        lines = text.splitlines()
        assert lines[0].startswith("GPU 0  NVIDIA A100-SXM4-80GB")
        assert "util  97%" in lines[0] and "temp 71°C" in lines[0]
        assert "power N/A" in lines[0]  # the stand-in binding lacks nvmlDeviceGetPowerUsage
        assert lines[1].startswith("  mem █") and "76.0/80.0 GiB (95%)" in lines[1]
        assert lines[2].startswith("  hist ") and lines[2].endswith("peak  95%")
        assert lines[2].split()[1] == "▂▂▃▃▄▅▅▆▆▇▇█"  # 12 polls, rising from 12% to 95%
        own = [line for line in lines if "4242" in line]
        other = [line for line in lines if "5151" in line]
        assert own[0].lstrip().startswith("▶ ") and "30.0G" in own[0]
        assert not other[0].lstrip().startswith("▶")
        assert "GPU 2  NVIDIA A100-SXM4-80GB  ✗ GPU is lost" in text
        assert "no processes" in text  # GPU 1
        assert lines[-1].startswith("CPU  12%")
        assert all(len(line) <= 80 for line in lines)
        # Own pids are a reactive too: changing them repaints.
        panel.own_pids = frozenset({5151})
        await pilot.pause()
        lines = _text(panel).splitlines()
        assert next(line for line in lines if "5151" in line).lstrip().startswith("▶ ")
        # Switching forms is a reactive as well.
        panel.detailed = False
        await pilot.pause()
        assert _text(panel).splitlines()[0].startswith("GPU0 ")


@sync
async def test_narrow_width_still_fits() -> None:
    panel = GpuPanel(_snapshots(3)[-1], detailed=True, own_pids={4242})
    async with PanelApp(panel).run_test(size=(40, 30)) as pilot:
        await pilot.pause()
        lines = _text(panel).splitlines()
        assert all(len(line) <= 40 for line in lines)
        assert any("util  97%" in line for line in lines)
        panel.detailed = False
        await pilot.pause()
        lines = _text(panel).splitlines()
        assert all(len(line) <= 40 for line in lines)
        assert "22.0/80.0 GiB" in lines[0]  # the numbers survive; the name is what gives way


def test_snapshot_svg(snap_compare: object) -> None:
    snaps = _snapshots(12)
    panel = GpuPanel(detailed=True, own_pids={4242})

    async def feed(pilot: object) -> None:
        for snap in snaps:
            panel.snapshot = snap

    class SnapshotApp(PanelApp):
        CSS = "GpuPanel { border: round $accent; }"

    assert snap_compare(  # type: ignore[operator]
        SnapshotApp(panel), terminal_size=SIZE, run_before=feed
    )
