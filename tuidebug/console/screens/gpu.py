"""The GPU & memory screen (key G): every GPU in detail, the torch allocator per rank and
device, the run's processes, where activation memory goes, and the OOM report.

Keys: ``R`` resets the allocator's peak (the peak since start is kept), ``S`` records the next
3 steps' CUDA allocations and saves a memory snapshot (for https://pytorch.org/memory_viz; the
section shows its top allocation sites), ``escape`` goes back; the app's ``d`` opens the
post-mortem debugger when the run is held after the error.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from tuidebug.console.extensions import SendCommand
from tuidebug.console.memory_model import GpuState, LayerMemory
from tuidebug.console.widgets.gpu_panel import GpuPanel
from tuidebug.gpu.history import sparkline
from tuidebug.memory_cli import site_table, summary_lines
from tuidebug.units import fmt_bytes
from tuidebug.wire.messages import Command

TOP = 6  # layers listed per ranking: enough to choose what to checkpoint, fits 80x24 with GPUs
SNAPSHOT_STEPS = 3  # steps a snapshot records: a few KB of stack per allocation, keep it short
SITES = 8  # allocation sites listed


class GpuScreen(Screen[None]):
    """GPU & memory: NVML, allocator, activation memory per layer, OOM forensics."""

    DEFAULT_CSS = """
    GpuScreen #gpu-body { height: 1fr; }
    GpuScreen .gpu-section { height: auto; padding: 0 1; }
    GpuScreen #gpu-oom { border: heavy red; display: none; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("R", "reset_peak", "Reset peak"),
        Binding("S", "memory_snapshot", f"CUDA snapshot ({SNAPSHOT_STEPS} steps)"),
    ]

    def __init__(self, state: GpuState, send: SendCommand) -> None:
        super().__init__()
        self.state = state
        self.send = send
        self._shown = -1
        self._layers_shown = -1
        self.asked = 0  # steps of the snapshot asked for from here (0: none yet)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="gpu-body"):
            yield Static(id="gpu-oom", classes="gpu-section")
            panel = GpuPanel(detailed=True, id="gpu-panel")
            panel.history = self.state.history  # the state's history: the chart survives
            yield panel
            yield Static(id="gpu-allocator", classes="gpu-section")
            yield Static(id="gpu-snapshot", classes="gpu-section")
            yield Static(id="gpu-layers", classes="gpu-section")
        yield Footer()

    def on_mount(self) -> None:
        # Pushed again after a dismiss, the screen composes new (empty) sections: fill them.
        self._shown = self._layers_shown = -1
        self.sync()

    def sync(self) -> None:
        state = self.state
        state.jump = False
        if state.version == self._shown and state.layers_version == self._layers_shown:
            return
        self._shown, self._layers_shown = state.version, state.layers_version
        panel = self.query_one(GpuPanel)
        if state.gpu is not None:
            panel.own_pids = frozenset(state.gpu.own_pids)
            panel.snapshot = state.gpu.snapshot
        self.query_one("#gpu-allocator", Static).update(self._allocator())
        self.query_one("#gpu-snapshot", Static).update(self._snapshot())
        self.query_one("#gpu-layers", Static).update(self._layers())
        oom = self.query_one("#gpu-oom", Static)
        if state.oom is not None:
            oom.display = True
            oom.update(self._oom())

    # --- sections ---------------------------------------------------------------------------

    def _allocator(self) -> Text:
        state = self.state
        out = _title("torch allocator")
        if not state.allocator:
            out.append("\n  no CUDA memory in use by the script (CUDA not initialised)", "dim")
        for rank in sorted(state.allocator):
            stats = state.allocator[rank]
            for d in stats.devices:
                out.append(f"\n  rank {rank} cuda:{d.device}  ", style="bold")
                out.append(f"alloc {fmt_bytes(d.allocated)}  reserved {fmt_bytes(d.reserved)}")
                out.append(
                    f"  peak {fmt_bytes(d.peak)} (since reset {fmt_bytes(d.peak_since_reset)})"
                )
                if d.total:
                    out.append(f"  of {fmt_bytes(d.total)}", style="dim")
                series = list(state.allocated.get((rank, d.device), ()))
                if series:
                    out.append("\n    alloc ")
                    out.append(sparkline(list(series), 50), style="green")
            if stats.batch:
                out.append(f"\n    batch {stats.batch}", style="dim")
        if state.gpu is not None and state.gpu.processes:
            out.append("\nrun processes", style="bold underline")
            for p in state.gpu.processes:
                out.append(
                    f"\n  pid {p.pid:>7}  RSS {fmt_bytes(p.rss):>10}  CPU {p.cpu_percent:5.1f}%"
                )
        return out

    def _snapshot(self) -> Text:
        state = self.state
        out = _title("CUDA memory snapshot")
        recording = state.recording()
        result = state.latest_snapshot()
        if recording:
            started = state.snapshot_started[recording[0]]
            out.append(
                f"\n  recording the allocations of steps {started.step + 1}-"
                f"{started.step + started.steps} (rank {', '.join(map(str, recording))})..."
            )
            return out
        if result is None:
            if self.asked:
                out.append(f"\n  asked for {self.asked} steps: recording starts at the next step")
            else:
                out.append(
                    f"\n  S: record the next {SNAPSHOT_STEPS} steps' allocations and show where "
                    "the memory goes",
                    style="dim",
                )
            return out
        calm = bool(result.unavailable)
        for line in summary_lines(result):
            out.append(f"\n  {line}", style="dim" if calm else "red" if result.error else "")
        if calm or result.error or not result.sites:
            return out
        head, rows = site_table(result, SITES)
        out.append(f"\n    {head}  site", style="bold")
        for row, site in zip(rows, result.sites, strict=False):
            out.append(f"\n    {row}  ")
            out.append(site.site, style="bold" if site.user else "dim")
        return out

    def _layers(self) -> Text:
        state = self.state
        out = _title("activation memory")
        ranks = state.ranks
        if not ranks:
            out.append("\n  waiting for a sampled step of the layers sampler", style="dim")
            return out
        rank = ranks[0]
        rows = state.layer_memory(rank)
        acts = sum(r.out for r in rows if r.leaf)
        params = sum(r.params for r in rows)
        grads = sum(r.grads for r in rows)
        opt = sum(r.state for r in rows)
        est = " (est. float32)" if any(r.estimated for r in rows) else ""
        out.append(
            f"\n  rank {rank}: activations {fmt_bytes(acts)} · params {fmt_bytes(params)}"
            f" · grads {fmt_bytes(grads)}{est} · optimizer state {fmt_bytes(opt)}"
        )
        top = state.top_consumers(rank, TOP)
        if top:
            out.append("\n  checkpointing would save most in:", style="bold")
            out.append_text(_rows(top, saving=True))
        leaves = state.top_layers(rank, TOP)
        if leaves:
            out.append("\n  biggest outputs kept for backward:", style="bold")
            out.append_text(_rows(leaves, saving=False))
        return out

    def _oom(self) -> Text:
        report = self.state.oom
        assert report is not None
        error = report.error
        out = Text(f"OUT OF MEMORY at step {error.step:,} (rank {error.rank})", style="bold red")
        first = (error.text.strip().splitlines() or [error.exc_type])[0]
        out.append(f"\n  {error.exc_type}: {first[:300]}")
        if report.moment is not None:
            m = report.moment
            out.append(
                f"\n  failing allocation: {fmt_bytes(m.requested)} on cuda:{m.device}"
                f" · allocated {fmt_bytes(m.device_allocated)} · free {fmt_bytes(m.device_free)}"
            )
        if report.allocator is not None:
            for d in report.allocator.devices:
                out.append(
                    f"\n  last sample cuda:{d.device}: alloc {fmt_bytes(d.allocated)}"
                    f" · reserved {fmt_bytes(d.reserved)} · peak {fmt_bytes(d.peak)}"
                    + (f" of {fmt_bytes(d.total)}" if d.total else "")
                )
        else:
            out.append("\n  no allocator figures were sampled before the error", style="dim")
        if report.batch:
            out.append(f"\n  batch {report.batch}")
        if report.top:
            out.append("\n  biggest layers by activation memory:", style="bold")
            out.append_text(_rows(report.top, saving=not report.top[0].leaf))
        out.append("\n  ways out:", style="bold")
        for way in report.ways_out:
            out.append(f"\n   · {way}")
        if error.held:
            out.append("\n  d: post-mortem debugger at the failing line", style="bold")
        else:
            out.append(
                "\n  the process has exited (run without --no-hold for a post-mortem with d)",
                style="dim",
            )
        return out

    # --- actions ----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_reset_peak(self) -> None:
        self.send(Command(name="memory-reset-peak", rank=-1))
        self.notify("asked every rank to reset its peak memory")

    def action_memory_snapshot(self) -> None:
        self.asked = SNAPSHOT_STEPS
        self.send(Command(name="memory-snapshot", rank=-1, args={"steps": str(SNAPSHOT_STEPS)}))
        self.notify(f"asked every rank for a CUDA memory snapshot of {SNAPSHOT_STEPS} steps")
        self._shown = -1
        self.sync()


def _title(title: str) -> Text:
    """A section's text, starting with its underlined title (only the title: a Text's own
    style would underline every line appended to it)."""
    out = Text()
    out.append(title, style="bold underline")
    return out


def _rows(rows: list[LayerMemory], *, saving: bool) -> Text:
    out = Text()
    for r in rows:
        figure = r.saving if saving else r.out
        out.append(f"\n    {fmt_bytes(figure):>10}  ")
        out.append(r.name[:44], style="bold")
        out.append(f"  {r.type[:20]}", style="dim")
    return out
