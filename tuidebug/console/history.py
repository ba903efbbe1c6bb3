"""Fixed-size min/max histories of scalar series, for charts that never slow down.

A training run logs a loss value per step, for millions of steps. A chart only ever needs one
value range per terminal column, so :class:`MinMaxHistory` keeps a fixed number of *buckets*
(1024 by default). Each bucket covers ``width`` consecutive x positions and keeps the first/last
x, the min, max, sum and count of the finite values, the last finite value and the number of
non-finite values. When a point falls past the last bucket, adjacent pairs of buckets merge and
the width doubles: memory and drawing cost stay constant, and because merging keeps min and
max, a one-step spike survives any number of merges and always shows in the chart.

Pure Python on purpose: the console's data model (RunModel) uses it without Textual, Rich or
torch, and tests run it without a terminal.

x axis, and steps that go backwards
-----------------------------------
Buckets are keyed by *x*, a coordinate that never decreases. While steps only move forward,
``x == step``. When a step arrives that is smaller than the previous one (a checkpoint restore
set the step back), the history does **not** overwrite or drop what came before: the abandoned
stretch really happened (it is often why the user restored) and hiding it would make the chart
lie. Instead the x axis continues: the rewound step gets ``x = last_x + 1`` and the following
steps keep their spacing from there, so the chart shows the old branch, then the new one, with
a marker between them. :meth:`step_at` maps an x back to the real step for axis labels. The
smoothed series restarts at a rewind, so the new branch's line does not carry the old branch's
values.

Non-finite values
-----------------
NaN and ±inf are never silently dropped: they are counted per bucket (``nonfinite``) and in
:attr:`MinMaxHistory.nonfinite_total`, and kept out of min/max/sum/mean (one NaN would otherwise
poison a whole bucket's statistics) and out of the smoothed series.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["Column", "Marker", "MinMaxHistory"]

_INF = math.inf


class Column(NamedTuple):
    """Aggregate of the finite values that fall into one chart column."""

    min: float
    max: float
    mean: float
    last: float


class Marker(NamedTuple):
    """An event drawn on the chart (a restore, a checkpoint save...)."""

    x: int
    step: int
    label: str


class MinMaxHistory:
    """A (step, value) series in a fixed number of min/max buckets, plus a smoothed series.

    Args:
        capacity: Number of buckets (even, >= 2). Drawing cost is proportional to it; 1024 is
            enough for a full-width chart on a 4K terminal with braille (2 dots per cell).
        smoothing: TensorBoard-style smoothing weight in ``[0, 1)``: the smoothed series is the
            debiased exponential moving average ``ema = w * ema + (1 - w) * value``. 0 disables
            smoothing (the smoothed series equals the raw one); 0.6-0.99 are usual.
        max_markers: How many markers to keep (the oldest are dropped).
    """

    __slots__ = (
        "_cap",
        "_count",
        "_ema",
        "_ema_weight_pow",
        "_first_x",
        "_last",
        "_last_step",
        "_last_x",
        "_markers",
        "_max",
        "_max_markers",
        "_min",
        "_nonfinite",
        "_offset",
        "_origin",
        "_rewinds",
        "_segments",
        "_shift",
        "_smax",
        "_smin",
        "_ssum",
        "_sum",
        "_used",
        "last_value",
        "nonfinite_total",
        "smoothing",
        "total",
    )

    def __init__(self, capacity: int = 1024, smoothing: float = 0.9, max_markers: int = 256):
        if capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 2, not {capacity}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), not {smoothing}")
        self._cap = capacity
        self.smoothing = smoothing
        self._max_markers = max_markers
        self.clear()

    # -- state -------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every point and marker."""
        cap = self._cap
        # Structure of arrays: one list per field. Appending touches a handful of list slots,
        # and merging is a few list comprehensions over slices, which is much faster in CPython
        # than a list of bucket objects.
        self._first_x: list[int] = [0] * cap
        self._last_x: list[int] = [0] * cap
        self._min: list[float] = [_INF] * cap
        self._max: list[float] = [-_INF] * cap
        self._sum: list[float] = [0.0] * cap
        self._count: list[int] = [0] * cap
        self._last: list[float] = [math.nan] * cap
        self._nonfinite: list[int] = [0] * cap
        self._smin: list[float] = [_INF] * cap
        self._smax: list[float] = [-_INF] * cap
        self._ssum: list[float] = [0.0] * cap
        self._used = 0  # buckets 0.._used-1 may hold points; the last one is the open one
        self._shift = 0  # bucket width is 1 << shift x positions
        self._origin = 0  # x of the first point
        self._offset = 0  # x - step for the current segment (grows at each rewind)
        self._last_step: int | None = None
        self._segments: list[tuple[int, int]] = []  # (first x, offset) of each segment
        self._rewinds = 0
        self._ema = 0.0
        self._ema_weight_pow = 1.0
        self._markers: list[Marker] = []
        self.total = 0
        """Number of points appended (finite or not)."""
        self.nonfinite_total = 0
        """Number of NaN/inf values appended."""
        self.last_value: float = math.nan
        """The last value appended, finite or not (a table shows NaN if the loss just went NaN)."""

    def __len__(self) -> int:
        return self.total

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def bucket_width(self) -> int:
        """How many x positions one bucket covers now (a power of two)."""
        return 1 << self._shift

    @property
    def last_step(self) -> int | None:
        return self._last_step

    @property
    def rewinds(self) -> int:
        """How many times a step went backwards."""
        return self._rewinds

    @property
    def markers(self) -> list[Marker]:
        return list(self._markers)

    def x_range(self) -> tuple[int, int] | None:
        """The (first, last) x of the points, or None when empty."""
        if not self.total:
            return None
        return self._origin, self._last_x[self._used - 1]

    def step_at(self, x: int) -> int:
        """The real step at position ``x`` (x and step differ only after a rewind)."""
        segments = self._segments
        if not segments:
            return x
        i = bisect.bisect_right(segments, (x, math.inf)) - 1
        return x - segments[max(i, 0)][1]

    def smoothed_last(self) -> float:
        """The current value of the smoothed series (NaN before any finite value)."""
        if self._ema_weight_pow == 1.0:
            return math.nan
        return self._ema / (1.0 - self._ema_weight_pow)

    def finite_range(self) -> tuple[float, float] | None:
        """(min, max) over every finite value, or None if there is none."""
        used = self._used
        lo = min(self._min[:used], default=_INF)
        hi = max(self._max[:used], default=-_INF)
        if lo > hi:
            return None
        return lo, hi

    # -- writing -----------------------------------------------------------------------------

    def _rewind(self, step: int) -> None:
        # A step went backwards: continue the x axis right after the last point (see module doc).
        last_x = self._last_x[self._used - 1] if self._used else self._origin
        self._offset = last_x + 1 - step
        self._segments.append((last_x + 1, self._offset))
        self._rewinds += 1
        # The smoothed line restarts with the new branch.
        self._ema = 0.0
        self._ema_weight_pow = 1.0

    def _merge(self) -> None:
        """Merge adjacent bucket pairs: half as many buckets, each twice as wide."""
        used = self._used
        if used % 2:
            # Pad to an even count with an empty bucket so pairs line up with the new width.
            used += 1
        half = used // 2
        pad = self._cap - half

        def pairs_min(v: list[float]) -> list[float]:
            return [a if a < b else b for a, b in zip(v[0:used:2], v[1:used:2], strict=True)] + [
                _INF
            ] * pad

        def pairs_max(v: list[float]) -> list[float]:
            return [a if a > b else b for a, b in zip(v[0:used:2], v[1:used:2], strict=True)] + [
                -_INF
            ] * pad

        def pairs_sum(v: list[float]) -> list[float]:
            return [a + b for a, b in zip(v[0:used:2], v[1:used:2], strict=True)] + [0.0] * pad

        def pairs_isum(v: list[int]) -> list[int]:
            return [a + b for a, b in zip(v[0:used:2], v[1:used:2], strict=True)] + [0] * pad

        count, nonfinite = self._count, self._nonfinite
        n = [c + f for c, f in zip(count, nonfinite, strict=True)]
        left_full = n[0:used:2]
        right_full = n[1:used:2]
        fx, lx, last = self._first_x, self._last_x, self._last
        self._first_x = [
            a if na else b for a, b, na in zip(fx[0:used:2], fx[1:used:2], left_full, strict=True)
        ] + [0] * pad
        self._last_x = [
            b if nb else a for a, b, nb in zip(lx[0:used:2], lx[1:used:2], right_full, strict=True)
        ] + [0] * pad
        # The last *finite* value: the right bucket's if it has any finite value.
        self._last = [
            b if cb else a
            for a, b, cb in zip(last[0:used:2], last[1:used:2], count[1:used:2], strict=True)
        ] + [math.nan] * pad
        self._min = pairs_min(self._min)
        self._max = pairs_max(self._max)
        self._sum = pairs_sum(self._sum)
        self._smin = pairs_min(self._smin)
        self._smax = pairs_max(self._smax)
        self._ssum = pairs_sum(self._ssum)
        self._count = pairs_isum(count)
        self._nonfinite = pairs_isum(nonfinite)
        self._used = half
        self._shift += 1

    def append(self, step: int, value: float) -> None:
        """Add one point. Amortised O(1): a merge every ``capacity / 2`` buckets."""
        last_step = self._last_step
        if last_step is None:
            self._origin = step
            self._offset = 0
            self._segments.append((step, 0))
        elif step < last_step:
            self._rewind(step)
        self._last_step = step
        x = step + self._offset
        i = (x - self._origin) >> self._shift
        if i >= self._cap:
            while i >= self._cap:
                self._merge()
                i = (x - self._origin) >> self._shift
        if i >= self._used:
            # Open a new bucket (the slots were reset to empty values by clear() or _merge()).
            self._used = i + 1
            self._first_x[i] = x
        self._last_x[i] = x
        self.total += 1
        self.last_value = value
        # value - value is 0.0 only for finite floats (NaN - NaN and inf - inf are NaN);
        # cheaper than a call to math.isfinite in this hot path.
        if value - value == 0.0:
            if value < self._min[i]:
                self._min[i] = value
            if value > self._max[i]:
                self._max[i] = value
            self._sum[i] += value
            self._count[i] += 1
            self._last[i] = value
            w = self.smoothing
            ema = self._ema = self._ema * w + (1.0 - w) * value
            wp = self._ema_weight_pow = self._ema_weight_pow * w
            # Debiasing (as TensorBoard does): without it the line starts near zero.
            s = ema / (1.0 - wp)
            if s < self._smin[i]:
                self._smin[i] = s
            if s > self._smax[i]:
                self._smax[i] = s
            self._ssum[i] += s
        else:
            self._nonfinite[i] += 1
            self.nonfinite_total += 1

    def extend(self, steps: Iterable[int], values: Iterable[float]) -> None:
        """Append many points (a batch of messages folded once per frame)."""
        append = self.append
        for step, value in zip(steps, values, strict=True):
            append(step, value)

    def mark(self, step: int, label: str, *, rewind: bool = True) -> Marker:
        """Keep an event marker at ``step`` (e.g. ``"restore"``) for the chart to draw.

        A marker whose step is before the last step announces a rewind: the x axis continues
        right away, so the marker sits where the new branch starts and the next ``append`` of
        that step does not rewind again. With ``rewind=False`` (an event that may arrive a few
        points late, such as an epoch's end) it is placed at its step on the current branch
        instead, and the axis does not move.
        """
        if self._last_step is not None and step < self._last_step and rewind:
            self._rewind(step)
            self._last_step = step
        x = step + self._offset if self._last_step is not None else step
        if not rewind and self._segments:
            x = max(x, self._segments[-1][0])  # never into the branch before a rewind
        marker = Marker(x, step, label)
        self._markers.append(marker)
        if len(self._markers) > self._max_markers:
            del self._markers[0]
        return marker

    def relabel(self, marker: Marker, label: str) -> Marker:
        """Give a kept marker another label (two events at one step share one marker)."""
        for i in range(len(self._markers) - 1, -1, -1):
            if self._markers[i] is marker:
                self._markers[i] = marker = marker._replace(label=label)
                break
        return marker

    # -- reading -----------------------------------------------------------------------------

    def _buckets_in(self, x0: int, x1: int) -> range:
        """Indices of the buckets that may hold points with x0 <= x <= x1."""
        shift, origin = self._shift, self._origin
        first = max(0, (x0 - origin) >> shift)
        last = min(self._used - 1, (x1 - origin) >> shift)
        return range(first, last + 1)

    def _column_map(
        self, columns: int, step_range: tuple[int, int] | None
    ) -> tuple[int, int, list[tuple[int, int, int]]] | None:
        """For each non-empty bucket in range: (bucket, first column, last column)."""
        if columns <= 0 or not self.total:
            return None
        full = self.x_range()
        assert full is not None
        x0, x1 = step_range if step_range is not None else full
        if x1 < x0:
            return None
        # The first x maps to column 0 and the last to column columns-1, so that a few points
        # spread over the whole width (the chart joins them into a line).
        scale = (columns - 1) / (x1 - x0) if x1 > x0 else 0.0
        col_width = 1.0 / scale if scale else math.inf  # x positions per column
        count, nonfinite, fx, lx = self._count, self._nonfinite, self._first_x, self._last_x
        last_col = columns - 1
        out: list[tuple[int, int, int]] = []
        for i in self._buckets_in(x0, x1):
            if not (count[i] or nonfinite[i]):
                continue
            a, b = fx[i], lx[i]
            if b < x0 or a > x1:
                continue
            # Plain comparisons rather than min()/max(): this loop runs per bucket per frame.
            if a < x0:
                a = x0
            if b > x1:
                b = x1
            if b - a < col_width:
                # Narrower than a column: exactly one column, the one of its middle, so each
                # value (and each spike) shows once and columns are not smeared.
                c0 = c1 = int(((a + b) * 0.5 - x0) * scale + 0.5)
            else:
                # Wider than a column (few points, or a zoomed-in view): every column it covers.
                c0 = int((a - x0) * scale + 0.5)
                c1 = int((b - x0) * scale + 0.5)
            if c1 > last_col:
                c1 = last_col
                if c0 > last_col:
                    c0 = last_col
            out.append((i, c0, c1))
        return x0, x1, out

    def downsample(
        self,
        columns: int,
        step_range: tuple[int, int] | None = None,
        *,
        smoothed: bool = False,
    ) -> list[Column | None]:
        """Aggregate the buckets into ``columns`` columns: one per terminal cell or braille dot.

        Args:
            columns: How many columns to produce.
            step_range: Inclusive (first, last) x range to show; the whole history by default.
                x equals the step unless a step went backwards (see the module docstring).
            smoothed: Aggregate the smoothed series instead of the raw one.

        Returns:
            Per column, ``Column(min, max, mean, last)`` of the finite values in it, or None
            when the column holds no finite value. Every bucket lands in at least one column, so
            the max of a column includes every spike of the buckets under it.
        """
        return self._aggregate(self._column_map(columns, step_range), columns, smoothed)

    def downsample_all(
        self, columns: int, step_range: tuple[int, int] | None = None
    ) -> tuple[list[Column | None], list[Column | None], list[int]]:
        """``(downsample(raw), downsample(smoothed), nonfinite_columns)`` in one pass.

        What a chart calls once per frame: the bucket-to-column mapping is computed once.
        """
        mapping = self._column_map(columns, step_range)
        return (
            self._aggregate(mapping, columns, False),
            self._aggregate(mapping, columns, True),
            self._nonfinite_of(mapping, columns),
        )

    def _aggregate(
        self,
        mapping: tuple[int, int, list[tuple[int, int, int]]] | None,
        columns: int,
        smoothed: bool,
    ) -> list[Column | None]:
        result: list[Column | None] = [None] * max(columns, 0)
        if mapping is None:
            return result
        _, _, buckets = mapping
        if smoothed:
            mins, maxs, sums = self._smin, self._smax, self._ssum
        else:
            mins, maxs, sums = self._min, self._max, self._sum
        count, last = self._count, self._last
        col_min = [_INF] * columns
        col_max = [-_INF] * columns
        col_sum = [0.0] * columns
        col_n = [0] * columns
        col_last = [math.nan] * columns
        for i, c0, c1 in buckets:
            n = count[i]
            if not n:
                continue
            mn, mx, sm = mins[i], maxs[i], sums[i]
            # A smoothed bucket's "last" is approximated by its mean: the EMA moves slowly.
            lv = last[i] if not smoothed else sm / n
            for c in range(c0, c1 + 1):
                if mn < col_min[c]:
                    col_min[c] = mn
                if mx > col_max[c]:
                    col_max[c] = mx
                col_sum[c] += sm
                col_n[c] += n
                col_last[c] = lv
        for c in range(columns):
            n = col_n[c]
            if n:
                result[c] = Column(col_min[c], col_max[c], col_sum[c] / n, col_last[c])
        return result

    def nonfinite_columns(
        self, columns: int, step_range: tuple[int, int] | None = None
    ) -> list[int]:
        """Per column, how many NaN/inf values fell into it (the chart flags those columns)."""
        return self._nonfinite_of(self._column_map(columns, step_range), columns)

    def _nonfinite_of(
        self, mapping: tuple[int, int, list[tuple[int, int, int]]] | None, columns: int
    ) -> list[int]:
        result = [0] * max(columns, 0)
        if mapping is None:
            return result
        nonfinite = self._nonfinite
        for i, c0, _c1 in mapping[2]:
            if nonfinite[i]:
                result[c0] += nonfinite[i]
        return result

    def column_x(self, column: int, columns: int, step_range: tuple[int, int] | None = None) -> int:
        """The x position at the middle of ``column`` (to place markers and labels)."""
        full = step_range or self.x_range() or (0, 0)
        x0, x1 = full
        if columns <= 1 or x1 <= x0:
            return x0
        return x0 + round(column * (x1 - x0) / (columns - 1))

    def x_column(self, x: int, columns: int, step_range: tuple[int, int] | None = None) -> int:
        """The column in which position ``x`` is drawn (may be outside 0..columns-1)."""
        full = step_range or self.x_range() or (0, 0)
        x0, x1 = full
        if columns <= 1 or x1 <= x0:
            return 0
        return int((x - x0) * (columns - 1) / (x1 - x0) + 0.5)

    def buckets(self) -> list[dict[str, float | int]]:
        """The non-empty buckets as dicts (for tests and debugging; not for drawing)."""
        out: list[dict[str, float | int]] = []
        for i in range(self._used):
            if not (self._count[i] or self._nonfinite[i]):
                continue
            out.append(
                {
                    "first_x": self._first_x[i],
                    "last_x": self._last_x[i],
                    "first_step": self.step_at(self._first_x[i]),
                    "last_step": self.step_at(self._last_x[i]),
                    "min": self._min[i],
                    "max": self._max[i],
                    "sum": self._sum[i],
                    "count": self._count[i],
                    "last": self._last[i],
                    "nonfinite": self._nonfinite[i],
                }
            )
        return out
