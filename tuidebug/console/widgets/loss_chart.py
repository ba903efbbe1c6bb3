"""The live loss chart: raw min/max bars and a smoothed line, drawn with braille dots.

Built like Textual's own ``Sparkline``: a Rich renderable (:class:`LossChartRenderable`) does
the drawing, and a thin widget (:class:`LossChart`) holds the reactive options and picks the
colours from CSS. The data is a :class:`~tuidebug.console.history.MinMaxHistory`, which keeps a
fixed number of min/max buckets, so a draw costs the same at step 1,000 and at step 10,000,000.

Each terminal cell is a braille character of 2x4 dots. Per dot column the raw series is a
vertical bar from the column's min to its max (so a one-step spike always shows), joined to the
previous column's last value so that sparse points read as a line. The smoothed series is a
one-dot line in another colour. A braille cell has a single colour: where both series share a
cell, the smoothed colour wins, since it is the line people read.

Honesty rules: NaN/inf values are flagged with a red ``×`` on the x axis and counted in the
footer; with a log scale, values <= 0 cannot be placed, so bars reaching below zero are clipped
at the bottom, columns entirely <= 0 are skipped, and the footer says so.

Overlay (``tuidebug run --compare RUN``): another run's loss, a static history, drawn as its
smoothed line in a third colour on the same axes, aligned by step. The y range covers both
curves. The x range is the union of both (not the live run's alone): early in a run the whole
other curve shows, and the live line advances along it, which is the comparison people make
("am I below last time at this step?"). A legend row at the top names both runs. Cell colours,
when series share a cell: the live smoothed line, then the overlay, then the live raw bars.
A live run whose steps went back (a restore) continues its x axis past the rewind (see
``history``); the overlay stays aligned with the first stretch, where x is the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style, StyleType
from textual.app import RenderResult as WidgetRenderResult
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widget import Widget

from tuidebug.console.history import Column, MinMaxHistory

__all__ = ["LossChart", "LossChartRenderable", "format_number", "format_step", "nice_ticks"]

_BRAILLE_BASE = 0x2800
# Bit of each dot in a braille cell, indexed [row 0-3][column 0-1] (Unicode's dot numbering).
_DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
# _SPAN_BITS[side][a][b]: the bits of rows a..b (inclusive) in the given dot column of a cell,
# so a vertical bar costs one table lookup per cell instead of one per dot.
_SPAN_BITS = tuple(
    tuple(
        tuple(sum(_DOT_BITS[r][side] for r in range(a, b + 1)) if b >= a else 0 for b in range(4))
        for a in range(4)
    )
    for side in range(2)
)

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _decimals(step: float) -> int:
    """Decimals needed to tell apart numbers ``step`` apart (step is 1, 2 or 5 x 10^k)."""
    return min(8, max(0, -math.floor(math.log10(step) + 1e-9)))


def format_number(value: float, step: float | None = None) -> str:
    """A short human label: ``0.0123``, ``12.3k``, ``1.5e-5``.

    Args:
        value: The number.
        step: The distance between neighbouring labels (axis ticks), which sets the precision;
            without it, three significant digits.
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    mag = abs(value)
    ref = abs(step) if step else None
    if mag >= 1e4:
        for unit, suffix in _SI:  # noqa: B007 (suffix is used after the loop)
            if mag >= unit:
                break
        d = _decimals(ref / unit) if ref else max(0, 2 - math.floor(math.log10(mag / unit)))
        return f"{value / unit:.{min(d, 3)}f}{suffix}"
    if mag < 1e-3 and (ref is None or ref < 1e-3):
        # Exponent form; the mantissa needs as many digits as the step is finer than the value.
        digits = (
            2
            if ref is None
            else max(0, math.floor(math.log10(mag)) - math.floor(math.log10(ref) + 1e-9))
        )
        mantissa, _, exponent = f"{value:.{min(digits, 3)}e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    d = _decimals(ref) if ref else min(6, max(0, 2 - math.floor(math.log10(mag))))
    return f"{value:.{d}f}"


def format_step(step: int) -> str:
    """A step count for the x axis: ``950``, ``12.3k``, ``1.20M``."""
    if abs(step) < 10_000:
        return str(step)
    return format_number(float(step))


def nice_ticks(lo: float, hi: float, max_ticks: int) -> tuple[list[float], float]:
    """Round tick values (1, 2 or 5 x 10^k apart) within [lo, hi], and their spacing."""
    span = hi - lo
    if span <= 0 or max_ticks < 2 or not math.isfinite(span):
        return [lo], 0.0
    # The densest 1-2-5 spacing that puts at most max_ticks ticks in the range (a fixed
    # "span / n" spacing can leave a single tick in view).
    mag = 10.0 ** math.floor(math.log10(span / max_ticks))
    step = span
    for candidate in (m * mag * 10**e for e in (0, 1, 2) for m in (1.0, 2.0, 5.0)):
        if math.floor(hi / candidate + 1e-9) - math.ceil(lo / candidate - 1e-9) + 1 <= max_ticks:
            step = candidate
            break
    first = math.ceil(lo / step - 1e-9)
    ticks: list[float] = []
    k = first
    while k * step <= hi + step * 1e-9 and len(ticks) <= max_ticks:
        # Multiplying an integer by the step (rather than adding steps) avoids 0.30000000004.
        ticks.append(k * step)
        k += 1
    return ticks, step


class _Canvas:
    """Rows of (character, style) cells, turned into runs of Segments at the end."""

    __slots__ = ("chars", "styles")

    def __init__(self, width: int, height: int, style: Style) -> None:
        self.chars = [[" "] * width for _ in range(height)]
        self.styles = [[style] * width for _ in range(height)]

    def text(self, row: int, col: int, text: str, style: Style) -> None:
        chars, styles = self.chars[row], self.styles[row]
        for i, ch in enumerate(text):
            if 0 <= col + i < len(chars):
                chars[col + i] = ch
                styles[col + i] = style

    def segments(self) -> list[list[Segment]]:
        lines: list[list[Segment]] = []
        for chars, styles in zip(self.chars, self.styles, strict=True):
            line: list[Segment] = []
            start = 0
            for i in range(1, len(chars) + 1):
                if i == len(chars) or styles[i] is not styles[start]:
                    line.append(Segment("".join(chars[start:i]), styles[start]))
                    start = i
            lines.append(line)
        return lines


class LossChartRenderable:
    """A Rich renderable that draws a :class:`MinMaxHistory` as a braille chart with axes.

    Args:
        history: The series to draw (None draws an empty chart).
        width: Width in cells; the console's width when None.
        height: Height in lines; the console's height (or 10) when None.
        log_scale: Logarithmic y axis (values <= 0 are clipped or skipped, and counted).
        show_raw: Draw the raw series as per-column min–max bars.
        show_smoothed: Draw the smoothed series as a line.
        step_range: Inclusive x range to show; the whole history (and overlay) when None.
        axes: Draw y labels, the x axis and its labels (drops itself when too small).
        overlay: Another run's loss (static), drawn as its smoothed line; see the module doc.
        live_label, overlay_label: The legend's names of the two runs (with an overlay only).
        raw_style, smoothed_style, axis_style, marker_style, nonfinite_style, overlay_style:
            Styles; named colours by default so the chart degrades to 16-colour terminals.
    """

    def __init__(
        self,
        history: MinMaxHistory | None,
        *,
        width: int | None = None,
        height: int | None = None,
        log_scale: bool = False,
        show_raw: bool = True,
        show_smoothed: bool = True,
        step_range: tuple[int, int] | None = None,
        axes: bool = True,
        overlay: MinMaxHistory | None = None,
        live_label: str = "",
        overlay_label: str = "",
        raw_style: StyleType = "cyan",
        smoothed_style: StyleType = "bright_magenta",
        axis_style: StyleType = "bright_black",
        marker_style: StyleType = "yellow",
        nonfinite_style: StyleType = "bold red",
        overlay_style: StyleType = "green",
        base_style: StyleType = "",
    ) -> None:
        self.history = history
        self.width = width
        self.height = height
        self.log_scale = log_scale
        self.show_raw = show_raw
        self.show_smoothed = show_smoothed
        self.step_range = step_range
        self.axes = axes
        self.overlay = overlay if overlay is not None and len(overlay) else None
        self.live_label = live_label
        self.overlay_label = overlay_label
        self.overlay_style = (
            Style.parse(overlay_style) if isinstance(overlay_style, str) else overlay_style
        )
        self.raw_style = Style.parse(raw_style) if isinstance(raw_style, str) else raw_style
        self.smoothed_style = (
            Style.parse(smoothed_style) if isinstance(smoothed_style, str) else smoothed_style
        )
        self.axis_style = Style.parse(axis_style) if isinstance(axis_style, str) else axis_style
        self.marker_style = (
            Style.parse(marker_style) if isinstance(marker_style, str) else marker_style
        )
        self.nonfinite_style = (
            Style.parse(nonfinite_style) if isinstance(nonfinite_style, str) else nonfinite_style
        )
        self.base_style = Style.parse(base_style) if isinstance(base_style, str) else base_style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = self.width or options.max_width
        height = self.height or options.height or 10
        for line in self.render_lines(width, height):
            yield from line
            yield Segment.line()

    # -- helpers -----------------------------------------------------------------------------

    def _view(self) -> tuple[int, int] | None:
        """The x range drawn: the zoom, else the union of the live series' and the overlay's."""
        if self.step_range is not None:
            return self.step_range
        ranges = [
            r
            for r in (
                self.history.x_range() if self.history is not None else None,
                self.overlay.x_range() if self.overlay is not None else None,
            )
            if r is not None
        ]
        if not ranges:
            return None
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def _columns(
        self, dot_cols: int, view: tuple[int, int] | None
    ) -> tuple[list[Column | None], list[Column | None], list[int], list[Column | None]]:
        """(raw, smoothed, NaN counts) of the live series and the overlay's smoothed columns,
        all on the same x mapping (``view``), so a step lands in the same column in both."""
        history, overlay = self.history, self.overlay
        empty: list[Column | None] = [None] * dot_cols
        over = overlay.downsample(dot_cols, view, smoothed=True) if overlay is not None else empty
        if history is None or not len(history):
            return empty, list(empty), [0] * dot_cols, over
        return (*history.downsample_all(dot_cols, view), over)

    def _y_range(
        self,
        raw: Sequence[Column | None],
        smooth: Sequence[Column | None],
        over: Sequence[Column | None] = (),
    ) -> tuple[float, float] | None:
        """(lo, hi) of what is drawn, in the transformed space (log10 with log_scale)."""
        lo, hi = math.inf, -math.inf
        log = self.log_scale
        if self.show_raw:
            for col in raw:
                if col is None:
                    continue
                if log:
                    # The smallest positive value is unknown when a column's min is <= 0: its
                    # mean or max stands in (that bar is clipped at the bottom anyway).
                    low = next((v for v in (col.min, col.mean, col.last, col.max) if v > 0), None)
                    if low is None:
                        continue
                    lo = min(lo, low)
                    hi = max(hi, col.max)
                else:
                    lo = min(lo, col.min)
                    hi = max(hi, col.max)
        for line in (smooth if self.show_smoothed else (), over):
            for col in line:
                if col is None or (log and col.mean <= 0):
                    continue
                lo = min(lo, col.mean)
                hi = max(hi, col.mean)
        if lo > hi:
            return None
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12 * max(1.0, abs(hi)):
            # Constant series: centre it in a small range rather than divide by zero.
            pad = 0.1 if log else (abs(hi) * 0.1 or 1.0)
            # Slightly off-centre: exactly mid-way between two dot rows, rounding noise in the
            # smoothed value (3.0000000000000004) would put the two series on different rows.
            lo, hi = lo - pad, hi + pad * 1.1
        return lo, hi

    def _ticks(self, lo: float, hi: float, max_ticks: int) -> list[tuple[float, str]]:
        """(transformed value, label) of the y ticks."""
        if not self.log_scale:
            values, step = nice_ticks(lo, hi, max_ticks)
            return [(v, format_number(v, step or None)) for v in values]
        first, last = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
        decades = last - first + 1
        if decades * 3 > max_ticks + 1:
            # Many powers of ten in view: label decades only, thinned to fit.
            every = max(1, math.ceil(decades / max_ticks))
            return [
                (float(k), format_number(10.0**k, 10.0**k)) for k in range(first, last + 1, every)
            ]
        # A few decades: 1, 2, 5 x 10^k (a chart spanning 0.15-8 needs more than one tick).
        out: list[tuple[float, str]] = []
        for k in range(first - 1, last + 1):
            for m in (1.0, 2.0, 5.0):
                t = k + math.log10(m)
                if lo - 1e-9 <= t <= hi + 1e-9:
                    out.append((t, format_number(m * 10.0**k, 10.0**k)))
        if len(out) >= 2:
            every = max(1, math.ceil(len(out) / max_ticks))
            return out[::every]
        # Less than a decade: round values placed on the log axis.
        values, step = nice_ticks(10.0**lo, 10.0**hi, max_ticks)
        return [(math.log10(v), format_number(v, step or None)) for v in values if v > 0]

    # -- drawing -----------------------------------------------------------------------------

    def render_lines(self, width: int, height: int) -> list[list[Segment]]:
        """Draw the chart as ``height`` lines of Segments, each ``width`` cells wide."""
        width, height = max(1, width), max(1, height)
        if self.overlay is not None and self.axes and width >= 16 and height >= 6:
            # The legend takes the top row; the chart is drawn in the rest.
            return [self._legend(width), *self._render_chart(width, height - 1)]
        return self._render_chart(width, height)

    def _legend(self, width: int) -> list[Segment]:
        """One row naming the live run and the overlaid one, each in its line's colour,
        right-aligned. When both names do not fit, the live run is "this run" (the header
        names it), then the other run's name is cut."""
        empty = self.history is None or not len(self.history)
        gap = 2
        entries: list[tuple[str, Style]] = []
        for live in (self.live_label or "this run", "this run"):
            live += " (no steps yet)" if empty else ""
            entries = [("━━ " + live, self.smoothed_style)]
            entries.append(("━━ vs " + self.overlay_label, self.overlay_style))
            if sum(len(text) for text, _ in entries) + gap <= width:
                break
        room = width - len(entries[0][0]) - gap
        if len(entries[1][0]) > room:
            entries[1] = (entries[1][0][: max(0, room - 1)] + "…", entries[1][1])
        canvas = _Canvas(width, 1, self.base_style)
        col = max(0, width - sum(len(text) for text, _ in entries) - gap)
        for text, style in entries:
            canvas.text(0, col, text, style)
            col += len(text) + gap
        return canvas.segments()[0]

    def _render_chart(self, width: int, height: int) -> list[list[Segment]]:
        history = self.history
        axes = self.axes and width >= 16 and height >= 4
        plot_rows = height - 2 if axes else height
        max_ticks = max(2, min(8, plot_rows // 2 + 1))
        view = self._view()

        # The y range does not depend on the column count (every bucket lands in some column),
        # so a first guess of the label width gives the range, the range gives the labels, and
        # the columns are recomputed only if the guess was wrong.
        label_w = 7 if axes else 0
        plot_cols = max(1, width - label_w - (1 if axes else 0))
        raw, smooth, nonfinite, over = self._columns(plot_cols * 2, view)
        y_range = self._y_range(raw, smooth, over)
        ticks: list[tuple[float, str]] = []
        if axes and y_range is not None:
            ticks = self._ticks(y_range[0], y_range[1], max_ticks)
            new_w = min(12, max((len(label) for _, label in ticks), default=1))
            if new_w != label_w:
                label_w = new_w
                plot_cols = max(1, width - label_w - 1)
                raw, smooth, nonfinite, over = self._columns(plot_cols * 2, view)
        left = label_w + 1 if axes else 0

        canvas = _Canvas(width, height, self.base_style)
        notes: list[tuple[str, Style]] = []
        dot_rows = plot_rows * 4
        raw_bits = [[0] * plot_cols for _ in range(plot_rows)]
        smooth_bits = [[0] * plot_cols for _ in range(plot_rows)]
        over_bits = [[0] * plot_cols for _ in range(plot_rows)]

        message = ""
        if history is None or not len(history):
            # With an overlay there is a curve to show: the legend says this run has no steps.
            message = "" if self.overlay is not None else "no data yet"
        elif self._y_range(raw, smooth) is None:
            if history.nonfinite_total and history.finite_range() is None:
                message = f"no finite values ({history.nonfinite_total} NaN/inf)"
            elif self.log_scale:
                message = "log scale: no values > 0"
            elif not (self.show_raw or self.show_smoothed):
                message = "raw and smoothed both hidden"
            else:
                message = "nothing to draw"
        if y_range is not None:
            clipped = self._plot(
                raw, smooth, over, y_range, dot_rows, raw_bits, smooth_bits, over_bits
            )
            if clipped:
                notes.append(("values ≤0 clipped (log)", self.marker_style))

        total_nonfinite = sum(nonfinite)
        if total_nonfinite:
            notes.insert(0, (f"{total_nonfinite} NaN/inf", self.nonfinite_style))

        # Braille cells: one colour a cell, the live smoothed line first, then the overlay.
        raw_style, smooth_style, over_style = (
            self.raw_style,
            self.smoothed_style,
            self.overlay_style,
        )
        for r in range(plot_rows):
            chars, styles = canvas.chars[r], canvas.styles[r]
            rb, sb, ob = raw_bits[r], smooth_bits[r], over_bits[r]
            for c in range(plot_cols):
                bits = rb[c] | sb[c] | ob[c]
                if bits:
                    chars[left + c] = chr(_BRAILLE_BASE + bits)
                    styles[left + c] = (
                        smooth_style if sb[c] else (over_style if ob[c] else raw_style)
                    )

        if message:
            row = max(0, (plot_rows - 1) // 2)
            text = message[:plot_cols]
            canvas.text(row, left + max(0, (plot_cols - len(text)) // 2), text, self.axis_style)

        if axes:
            self._draw_axes(
                canvas,
                history,
                view,
                ticks,
                y_range,
                plot_rows,
                plot_cols,
                label_w,
                nonfinite,
                notes,
            )
        elif total_nonfinite:
            # No axis row to flag them on: mark the NaN columns in the bottom row.
            for dc, n in enumerate(nonfinite):
                if n:
                    canvas.text(height - 1, dc // 2, "×", self.nonfinite_style)
        return canvas.segments()

    def _plot(
        self,
        raw: Sequence[Column | None],
        smooth: Sequence[Column | None],
        over: Sequence[Column | None],
        y_range: tuple[float, float],
        dot_rows: int,
        raw_bits: list[list[int]],
        smooth_bits: list[list[int]],
        over_bits: list[list[int]],
    ) -> int:
        """Set the dots of every series; returns how many columns the log axis clipped."""
        lo, hi = y_range
        scale = (dot_rows - 1) / (hi - lo)
        bottom = dot_rows - 1
        log = self.log_scale
        log10 = math.log10
        clipped = 0

        def row_of(v: float) -> int:
            # Row 0 is the top. Values outside the range (a zoomed step_range) are clamped.
            t = log10(v) if log else v
            r = int((hi - t) * scale + 0.5)
            return 0 if r < 0 else (bottom if r > bottom else r)

        def span(bits: list[list[int]], dc: int, r0: int, r1: int) -> None:
            # Set dots r0..r1 of dot column dc, one cell at a time.
            side, cell = dc & 1, dc >> 1
            table = _SPAN_BITS[side]
            for cr in range(r0 >> 2, (r1 >> 2) + 1):
                a = r0 - (cr << 2) if (cr << 2) < r0 else 0
                b = r1 - (cr << 2) if r1 < (cr << 2) + 3 else 3
                bits[cr][cell] |= table[a][b]

        if self.show_raw:
            prev_last: float | None = None
            filled = _fill_gaps(raw)
            for dc, col in enumerate(filled):
                if col is None:
                    prev_last = None
                    continue
                mn, mx = col.min, col.max
                if log:
                    if mx <= 0:
                        clipped += 1
                        prev_last = None
                        continue
                    if mn <= 0:
                        clipped += 1
                r_top, r_bot = row_of(mx), (row_of(mn) if not log or mn > 0 else bottom)
                if prev_last is not None and (not log or prev_last > 0):
                    # Join to the previous column's last value: sparse points read as a line.
                    rp = row_of(prev_last)
                    r_top, r_bot = min(r_top, rp), max(r_bot, rp)
                span(raw_bits, dc, r_top, r_bot)
                prev_last = col.last if (not log or col.last > 0) else None

        def line(columns: Sequence[Column | None], bits: list[list[int]]) -> None:
            # A one-dot line through the columns' means.
            prev_row: int | None = None
            for dc, col in enumerate(_fill_gaps(columns)):
                if col is None or (log and col.mean <= 0):
                    prev_row = None
                    continue
                r = row_of(col.mean)
                if prev_row is None or prev_row == r:
                    span(bits, dc, r, r)
                elif r > prev_row:
                    # Steep stretches are drawn in this column, from just past the previous
                    # row, so the line stays connected and one dot thin.
                    span(bits, dc, prev_row + 1, r)
                else:
                    span(bits, dc, r, prev_row - 1)
                prev_row = r

        if self.show_smoothed:
            line(smooth, smooth_bits)
        line(over, over_bits)
        return clipped

    def _draw_axes(
        self,
        canvas: _Canvas,
        history: MinMaxHistory | None,
        view: tuple[int, int] | None,
        ticks: list[tuple[float, str]],
        y_range: tuple[float, float] | None,
        plot_rows: int,
        plot_cols: int,
        label_w: int,
        nonfinite: list[int],
        notes: list[tuple[str, Style]],
    ) -> None:
        axis_style = self.axis_style
        axis_row, label_row = plot_rows, plot_rows + 1
        left = label_w + 1
        # y axis and its labels.
        tick_rows: set[int] = set()
        if y_range is not None:
            lo, hi = y_range
            for t, label in ticks:
                r = int((hi - t) / (hi - lo) * (plot_rows * 4 - 1) + 0.5) >> 2
                if 0 <= r < plot_rows and r not in tick_rows:
                    tick_rows.add(r)
                    canvas.text(r, max(0, label_w - len(label)), label[:label_w], self.base_style)
        for r in range(plot_rows):
            canvas.text(r, label_w, "┤" if r in tick_rows else "│", axis_style)
        canvas.text(axis_row, label_w, "└" + "─" * plot_cols, axis_style)

        # NaN/inf columns: a red × on the axis, so the step where the loss blew up is visible.
        for dc, n in enumerate(nonfinite):
            if n:
                canvas.text(axis_row, left + dc // 2, "×", self.nonfinite_style)

        # x labels: first and last step of the view.
        occupied: list[tuple[int, int]] = []
        live_end = history.x_range() if history is not None else None
        if view is not None:
            x_range = view

            def step_of(x: int) -> int:
                # Past the live run's last point the x is the overlay's step (see module doc).
                if history is None or live_end is None:
                    return x
                if self.overlay is not None and x > live_end[1]:
                    return x
                return history.step_at(x)

            first = format_step(step_of(x_range[0]))
            last = format_step(step_of(x_range[1]))
            canvas.text(label_row, left, first, self.base_style)
            occupied.append((left, left + len(first)))
            if x_range[1] != x_range[0]:
                start = max(left + len(first) + 1, left + plot_cols - len(last))
                canvas.text(label_row, start, last, self.base_style)
                occupied.append((start, start + len(last)))

            # Markers: a dotted line through empty plot cells, a ▲ on the axis, the label below.
            dot_cols = plot_cols * 2
            for marker in history.markers if history is not None else []:
                if history is None or not (x_range[0] <= marker.x <= x_range[1]):
                    continue
                col = history.x_column(marker.x, dot_cols, x_range) // 2
                if not 0 <= col < plot_cols:
                    continue
                for r in range(plot_rows):
                    if canvas.chars[r][left + col] == " ":
                        canvas.text(r, left + col, "┊", self.marker_style)
                canvas.text(axis_row, left + col, "▲", self.marker_style)
                label = f"{marker.label}@{format_step(marker.step)}"
                _place(
                    canvas,
                    label_row,
                    left + col,
                    label,
                    self.marker_style,
                    occupied,
                    left + plot_cols,
                )

        # Notes (NaN counts, log clipping) in the middle of the label row, if there is room.
        for text, style in notes:
            centre = left + (plot_cols - len(text)) // 2
            _place(canvas, label_row, centre, text, style, occupied, left + plot_cols)


def _place(
    canvas: _Canvas,
    row: int,
    col: int,
    text: str,
    style: Style,
    occupied: list[tuple[int, int]],
    limit: int,
) -> bool:
    """Write ``text`` starting at ``col``, or ending there, unless it overlaps another label."""
    for start in (col, col - len(text) + 1):
        start = max(0, min(start, limit - len(text)))
        end = start + len(text)
        if not any(start <= b and a <= end for a, b in occupied):
            canvas.text(row, start, text, style)
            occupied.append((start, end))
            return True
    return False


def _fill_gaps(columns: Sequence[Column | None]) -> list[Column | None]:
    """Linearly interpolate empty columns between two filled ones (sparse logging)."""
    out = list(columns)
    prev = -1
    for i, col in enumerate(columns):
        if col is None:
            continue
        if prev >= 0 and i - prev > 1:
            a = out[prev]
            assert a is not None
            v0, v1 = a.last, col.mean
            for j in range(prev + 1, i):
                v = v0 + (v1 - v0) * (j - prev) / (i - prev)
                out[j] = Column(v, v, v, v)
        prev = i
    return out


class LossChart(Widget):
    """A live chart of a :class:`MinMaxHistory`: raw min–max bars and a smoothed line.

    Feed it by appending to the history, then bump :attr:`version` (at most once per frame):
    the widget repaints only when the version changed, so an idle run costs nothing.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "loss-chart--raw",
        "loss-chart--smoothed",
        "loss-chart--axis",
        "loss-chart--marker",
        "loss-chart--nonfinite",
        "loss-chart--overlay",
    }
    """
    | Class | Description |
    | :- | :- |
    | `loss-chart--raw` | Colour of the raw min–max bars. |
    | `loss-chart--smoothed` | Colour of the smoothed line. |
    | `loss-chart--axis` | Axis lines and messages. |
    | `loss-chart--marker` | Event markers (restore, save...). |
    | `loss-chart--nonfinite` | NaN/inf flags and count. |
    | `loss-chart--overlay` | Another run's smoothed loss (`--compare`) and its legend. |
    """

    DEFAULT_CSS = """
    LossChart {
        height: 1fr;
        min-height: 6;
    }
    LossChart > .loss-chart--raw {
        color: $primary;
    }
    LossChart > .loss-chart--smoothed {
        color: $accent;
        text-style: bold;
    }
    LossChart > .loss-chart--axis {
        color: $text-muted;
    }
    LossChart > .loss-chart--marker {
        color: $warning;
    }
    LossChart > .loss-chart--nonfinite {
        color: $error;
        text-style: bold;
    }
    LossChart > .loss-chart--overlay {
        color: $success;
        text-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "toggle_log_scale", "Log scale", show=False),
        Binding("r", "toggle_raw", "Raw", show=False),
        Binding("s", "toggle_smoothed", "Smoothed", show=False),
    ]

    log_scale = reactive(False)
    """Logarithmic y axis. Values <= 0 are clipped (bars) or skipped (columns), and counted."""
    show_raw = reactive(True)
    """Draw the raw series as per-column min–max bars (spikes show)."""
    show_smoothed = reactive(True)
    """Draw the smoothed series as a line."""
    history = reactive[MinMaxHistory | None](None)
    """The series drawn. Assigning a different history repaints."""
    version = reactive(0)
    """Bumped by the owner after appending to :attr:`history`; a change repaints."""
    step_range = reactive[tuple[int, int] | None](None)
    """Inclusive x range to show (a zoom); the whole history (and overlay) when None."""
    overlay = reactive[MinMaxHistory | None](None)
    """Another run's loss, drawn with the live one (static: assigning it repaints once)."""
    overlay_label = reactive("")
    """The legend's name of the overlaid run."""
    live_label = reactive("")
    """The legend's name of the live run (shown only with an overlay)."""

    def __init__(
        self,
        history: MinMaxHistory | None = None,
        *,
        log_scale: bool = False,
        show_raw: bool = True,
        show_smoothed: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.set_reactive(LossChart.history, history)
        self.set_reactive(LossChart.log_scale, log_scale)
        self.set_reactive(LossChart.show_raw, show_raw)
        self.set_reactive(LossChart.show_smoothed, show_smoothed)

    def action_toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale

    def action_toggle_raw(self) -> None:
        self.show_raw = not self.show_raw

    def action_toggle_smoothed(self) -> None:
        self.show_smoothed = not self.show_smoothed

    def make_renderable(self, width: int, height: int) -> LossChartRenderable:
        """The renderable for the current state (also used by tests and benchmarks)."""
        style = self.get_component_rich_style
        return LossChartRenderable(
            self.history,
            width=width,
            height=height,
            log_scale=self.log_scale,
            show_raw=self.show_raw,
            show_smoothed=self.show_smoothed,
            step_range=self.step_range,
            overlay=self.overlay,
            live_label=self.live_label,
            overlay_label=self.overlay_label,
            raw_style=style("loss-chart--raw"),
            smoothed_style=style("loss-chart--smoothed"),
            axis_style=style("loss-chart--axis"),
            marker_style=style("loss-chart--marker"),
            nonfinite_style=style("loss-chart--nonfinite"),
            overlay_style=style("loss-chart--overlay"),
        )

    def render(self) -> WidgetRenderResult:
        size = self.content_size
        return self.make_renderable(size.width, size.height)
