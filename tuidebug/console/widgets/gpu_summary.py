"""The dashboard's GPU line(s): memory used/total and utilisation per GPU (or the one calm reason
there is none, with CPU and RAM), and the torch allocator per rank and device.

Hidden until the first GPU poll or allocator figure arrives, so a run recorded without them (or a
console attached to an older supervisor) shows the dashboard as before.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from tuidebug.console.memory_model import GpuState
from tuidebug.console.widgets.gpu_panel import GpuPanelView
from tuidebug.units import fmt_bytes

__all__ = ["GpuSummary", "allocator_line", "fmt_bytes"]


def allocator_line(rank: int, device: int, allocated: int, reserved: int, peak: int) -> Text:
    line = Text(f"rank {rank} cuda:{device} ", style="bold")
    line.append(f"alloc {fmt_bytes(allocated)} · reserved {fmt_bytes(reserved)}")
    line.append(f" · peak {fmt_bytes(peak)}", style="dim")
    return line


class GpuSummary(Static):
    """Compact GPU/memory summary; ``sync()`` once per frame redraws only on change."""

    DEFAULT_CSS = """
    GpuSummary {
        height: auto;
        width: 1fr;
        padding: 0 1;
        display: none;
    }
    """

    def __init__(self, state: GpuState) -> None:
        super().__init__(id="gpu-summary")
        self.state = state
        self._shown = -1

    def sync(self) -> None:
        state = self.state
        if state.version == self._shown:
            return
        self._shown = state.version
        if state.gpu is None and not state.allocator:
            return
        self.display = True
        parts: list[GpuPanelView | Text] = []
        if state.gpu is not None:
            parts.append(GpuPanelView(state.gpu.snapshot, detailed=False))
        for rank in sorted(state.allocator):
            for d in state.allocator[rank].devices:
                parts.append(allocator_line(rank, d.device, d.allocated, d.reserved, d.peak))
        self.update(Group(*parts))
