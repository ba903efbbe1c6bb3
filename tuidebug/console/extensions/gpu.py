"""GPU & memory (key G): NVML from the supervisor, the torch allocator and activation memory
from the probe, and the OOM report (the screen jumps open when the script dies out of memory).
"""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.memory_model import GpuState


def _screen(state: GpuState, send: SendCommand) -> Any:
    from tuidebug.console.screens.gpu import GpuScreen

    return GpuScreen(state, send)


def _dashboard_widget(state: GpuState) -> Any:
    from tuidebug.console.widgets.gpu_summary import GpuSummary

    return GpuSummary(state)


EXTENSION = ConsoleExtension(
    name="gpu",
    make_state=GpuState,
    key="G",
    title="GPU",
    make_screen=_screen,
    wants_screen=lambda state: state.jump,
    make_dashboard_widget=_dashboard_widget,
)
