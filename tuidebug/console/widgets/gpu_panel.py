"""The GPU panel: what NVML sees on each GPU, or why there are none, plus the host's CPU and RAM.

A thin Textual widget over a Rich renderable (:class:`GpuPanelView`): each new snapshot only
changes a reactive and repaints; nothing is recomposed. Two forms:

- compact (dashboard): one line per GPU with memory used/total and utilisation, or the one-line
  reason there is no GPU; then CPU and RAM.
- detailed (GPU screen): per GPU its name, memory bar, utilisation, temperature, power, a chart
  of memory over time and the processes on it, the run's own pids marked with ``▶``.

Marks do not rely on colour alone (``▶``, ``✗``), so the panel reads the same without truecolor
or over a terminal with no colour at all. Everything fits in 80 columns.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tuidebug.gpu.history import MemoryHistory, sparkline
from tuidebug.gpu.snapshot import GpuDevice, GpuSnapshot, HostStats

__all__ = ["GpuPanel", "GpuPanelView"]

_MAX_PROCESSES = 8  # per GPU in the detailed form; the rest is summarised in one line


class GpuPanel(Widget):
    """GPU and host summary. Feed it with ``panel.snapshot = snap`` about once a second."""

    DEFAULT_CSS = """
    GpuPanel {
        height: auto;
        padding: 0 1;
    }
    """

    snapshot: reactive[GpuSnapshot | None] = reactive(None, layout=True)
    """The latest poll (from the supervisor); None until the first one arrives."""

    own_pids: reactive[frozenset[int]] = reactive(frozenset)
    """Pids of the run's own processes (its ranks), marked in the process lists."""

    detailed: reactive[bool] = reactive(False, layout=True)
    """False: the compact dashboard form; True: the full form of the GPU screen."""

    def __init__(
        self,
        snapshot: GpuSnapshot | None = None,
        *,
        detailed: bool = False,
        own_pids: Iterable[int] = (),
        history_len: int = 300,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        # The chart's history lives in the widget, so a panel mounted late starts empty but a
        # panel that stays mounted keeps its chart across screen switches.
        self.history = MemoryHistory(history_len)
        self.set_reactive(GpuPanel.detailed, detailed)
        self.set_reactive(GpuPanel.own_pids, frozenset(own_pids))
        if snapshot is not None:
            self.set_reactive(GpuPanel.snapshot, snapshot)
            self.history.add(snapshot)

    def watch_snapshot(self, snapshot: GpuSnapshot | None) -> None:
        if snapshot is not None:
            self.history.add(snapshot)

    def render(self) -> GpuPanelView:
        return GpuPanelView(self.snapshot, self.history, self.own_pids, detailed=self.detailed)


class GpuPanelView:
    """The Rich renderable behind :class:`GpuPanel`; lays itself out at the width it is given."""

    def __init__(
        self,
        snapshot: GpuSnapshot | None,
        history: MemoryHistory | None = None,
        own_pids: frozenset[int] = frozenset(),
        *,
        detailed: bool = False,
    ) -> None:
        self.snapshot = snapshot
        self.history = history
        self.own_pids = own_pids
        self.detailed = detailed

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(20, options.max_width)
        yield from self.lines(width)

    def lines(self, width: int) -> list[Text]:
        """The panel as lines of at most ``width`` cells."""
        snap = self.snapshot
        if snap is None:
            return [Text("GPU: waiting for the first poll…", style="dim")]
        out: list[Text] = []
        if not snap.devices and not self.detailed:
            # The dashboard's line: why there is no GPU, then CPU and RAM, on one line.
            line = _reason_line(snap.reason, width)
            line.append("  ·  ")
            line.append_text(_host_line(snap.host))
            out.append(line)
        elif not snap.devices:
            out.append(_reason_line(snap.reason, width))
            out.extend(_host_bars(snap.host, width))
        elif self.detailed:
            for device in snap.devices:
                out.extend(self._detail(device, width))
            out.append(_host_line(snap.host))
        else:
            out.extend(_compact_line(device, width) for device in snap.devices)
            out.append(_host_line(snap.host))
        for line in out:
            line.truncate(width, overflow="ellipsis")
        return out

    def _detail(self, device: GpuDevice, width: int) -> list[Text]:
        head = Text()
        head.append(f"GPU {device.index}", style="bold")
        head.append(f"  {device.name or '?'}")
        if device.error:
            head.append(f"  ✗ {device.error}", style="bold red")
            return [head]
        stats = "   ".join(
            [
                f"util {_pct(device.utilization)}",
                f"temp {_opt(device.temperature, '°C')}",
                f"power {_power(device.power_w, device.power_limit_w)}",
            ]
        )
        pad = width - head.cell_len - len(stats)
        if pad >= 2:
            head.append(" " * pad)
            head.append(stats)
            lines = [head]
        else:  # narrow: the stats get a line of their own
            lines = [head, Text("  " + stats)]

        mem = Text("  mem ")
        label = f" {_mem(device.memory_used, device.memory_total)}"
        fraction = device.memory_fraction
        label += f" ({fraction * 100:.0f}%)" if fraction is not None else ""
        label = label.rjust(21)  # bars of the same length on every GPU, so they compare
        mem.append_text(_bar(fraction, max(8, width - 6 - len(label))))
        mem.append(label)
        lines.append(mem)

        if self.history is not None:
            series = self.history.series(device.index)
            known = [v for v in series if v is not None]
            peak = f" peak {max(known) * 100:3.0f}%" if known else ""
            chart_width = max(8, width - 7 - len(peak))
            chart = Text("  hist ")
            chart.append(sparkline(series, chart_width), style=_level_style(fraction))
            chart.append(peak, style="dim")
            lines.append(chart)

        if device.processes:
            lines.append(
                Text(f"  {'':2}{'PID':>7}  {'PROCESS':<{max(8, width - 24)}}GPU MEM", style="dim")
            )
            # Biggest first: the question this list answers is "what is using the memory".
            ordered = sorted(device.processes, key=lambda p: -(p.used_memory or 0))
            for proc in ordered[:_MAX_PROCESSES]:
                own = proc.pid in self.own_pids
                row = Text(
                    f"  {'▶ ' if own else '  '}{proc.pid:>7}  "
                    f"{(proc.name or '?')[: max(8, width - 24) - 1]:<{max(8, width - 24)}}"
                    f"{_bytes(proc.used_memory):>7}",
                    style="bold green" if own else "",
                )
                lines.append(row)
            hidden = len(device.processes) - _MAX_PROCESSES
            if hidden > 0:
                lines.append(Text(f"  … {hidden} more processes", style="dim"))
        else:
            lines.append(Text("  no processes", style="dim"))
        return lines


# --- pieces ------------------------------------------------------------------------------------


def _compact_line(device: GpuDevice, width: int) -> Text:
    line = Text()
    line.append(f"GPU{device.index} ", style="bold")
    if device.error:
        line.append(f"✗ {device.error}", style="bold red")
        if device.name:
            line.append(f"  {device.name}", style="dim")
        return line
    mem = f" {_mem(device.memory_used, device.memory_total):>15}"
    util = f"  util {_pct(device.utilization)}"
    # The bar takes what the numbers and a short name leave; the name gets the rest, if any.
    bar_width = max(6, min(24, width - 5 - len(mem) - len(util) - 14))
    line.append_text(_bar(device.memory_fraction, bar_width))
    line.append(mem)
    line.append(util)
    room = width - line.cell_len - 2
    if device.name and room >= 6:
        line.append(f"  {_short_name(device.name)[:room]}", style="dim")
    return line


def _reason_line(reason: str | None, width: int) -> Text:
    line = Text("no GPU", style="bold")
    line.append(f" · {reason or 'NVML reports no devices'}", style="dim")
    return line


def _host_line(host: HostStats) -> Text:
    line = Text(f"CPU {host.cpu_percent:3.0f}%", style="")
    if host.ram_total:
        ram = host.ram_used / host.ram_total
        line.append(f"  ·  RAM {_mem(host.ram_used, host.ram_total)} ({ram * 100:.0f}%)")
    return line


def _host_bars(host: HostStats, width: int) -> list[Text]:
    cores = f" ({host.cpu_count} cores)" if host.cpu_count else ""
    cpu_label = f" {host.cpu_percent:3.0f}%{cores}"
    ram_label = f" {_mem(host.ram_used, host.ram_total)}"
    bar_width = max(8, min(40, width - 5 - max(len(cpu_label), len(ram_label))))
    cpu = Text("CPU  ", style="bold")
    cpu.append_text(_bar(host.cpu_percent / 100.0, bar_width))
    cpu.append(cpu_label)
    ram = Text("RAM  ", style="bold")
    ram.append_text(_bar(host.ram_used / host.ram_total if host.ram_total else None, bar_width))
    ram.append(ram_label)
    return [cpu, ram]


def _bar(fraction: float | None, width: int) -> Text:
    """A meter made of characters (readable without colour): ``█`` used, ``░`` free."""
    if fraction is None:
        return Text("·" * width, style="dim")
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    bar = Text("█" * filled, style=_level_style(fraction))
    bar.append("░" * (width - filled), style="dim")
    return bar


def _level_style(fraction: float | None) -> str:
    # Basic ANSI colours only: they survive 16-colour terminals and slow links.
    if fraction is None:
        return "dim"
    if fraction >= 0.9:
        return "red"
    if fraction >= 0.7:
        return "yellow"
    return "green"


def _short_name(name: str) -> str:
    # "NVIDIA A100-SXM4-80GB" -> "A100-SXM4-80GB": the vendor is the same on every line.
    return name.removeprefix("NVIDIA ").strip()


def _bytes(value: int | None) -> str:
    if value is None:
        return "N/A"
    if value >= 1 << 30:
        return f"{value / (1 << 30):.1f}G"
    return f"{value / (1 << 20):.0f}M"


def _mem(used: int | None, total: int | None) -> str:
    if used is None or total is None:
        return "N/A"
    gib = 1 << 30
    return f"{used / gib:.1f}/{total / gib:.1f} GiB"


def _pct(value: int | None) -> str:
    return "N/A" if value is None else f"{value:3d}%"


def _opt(value: int | None, unit: str) -> str:
    return "N/A" if value is None else f"{value}{unit}"


def _power(power: float | None, limit: float | None) -> str:
    if power is None:
        return "N/A"
    if limit is None:
        return f"{power:.0f} W"
    return f"{power:.0f}/{limit:.0f} W"
