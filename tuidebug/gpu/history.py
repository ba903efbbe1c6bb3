"""A bounded history of GPU memory use, for the panel's small chart. Pure Python, no UI.

Kept per device index, one sample per snapshot. Drawing decimates to the chart's width with the
maximum of each bucket, so a short spike (the moment before an OOM) is never averaged away, and
the cost of drawing depends on the width, not on how long the run has gone.
"""

from __future__ import annotations

from collections import deque

from tuidebug.gpu.snapshot import GpuSnapshot

__all__ = ["BLOCKS", "MemoryHistory", "sparkline"]

BLOCKS = " ▁▂▃▄▅▆▇█"
"""Levels of a one-line chart, from empty to full (index 0 is a blank for "no data")."""


class MemoryHistory:
    """The last ``maxlen`` memory fractions (used / total, 0..1) of every GPU seen."""

    def __init__(self, maxlen: int = 300) -> None:
        self.maxlen = maxlen
        self._series: dict[int, deque[float | None]] = {}
        self._last_time: float | None = None

    def add(self, snapshot: GpuSnapshot) -> None:
        """Record one snapshot; the same snapshot (same time) twice is recorded once."""
        if snapshot.time == self._last_time:
            return
        self._last_time = snapshot.time
        for device in snapshot.devices:
            series = self._series.get(device.index)
            if series is None:
                series = self._series[device.index] = deque(maxlen=self.maxlen)
            # An unknown value (lost GPU) is a gap in the chart, not a fall to zero.
            series.append(device.memory_fraction)

    def series(self, index: int) -> list[float | None]:
        """All samples kept for GPU ``index``, oldest first."""
        return list(self._series.get(index, ()))

    def columns(self, index: int, width: int) -> list[float | None]:
        """At most ``width`` values: the newest samples, several per column (max) when needed."""
        return decimate(self.series(index), width)

    def clear(self) -> None:
        self._series.clear()
        self._last_time = None


def decimate(values: list[float | None], width: int) -> list[float | None]:
    """Reduce ``values`` to at most ``width`` columns, keeping each bucket's maximum."""
    if width <= 0:
        return []
    if len(values) <= width:
        return list(values)
    out: list[float | None] = []
    n = len(values)
    for column in range(width):
        bucket = [
            v for v in values[column * n // width : (column + 1) * n // width] if v is not None
        ]
        out.append(max(bucket) if bucket else None)
    return out


def sparkline(values: list[float | None], width: int) -> str:
    """A one-line chart of fractions in [0, 1] on a fixed scale, right-aligned in ``width``.

    A fixed 0..1 scale (not min..max) because for memory the distance to full is the point.
    """
    columns = decimate(values, width)
    chars = []
    for value in columns:
        if value is None:
            chars.append(" ")
            continue
        # Zero shows the lowest block, so "none" (a baseline) differs from "unknown" (a gap).
        level = round(min(1.0, max(0.0, value)) * (len(BLOCKS) - 2))
        chars.append(BLOCKS[level + 1])
    return "".join(chars).rjust(width)
