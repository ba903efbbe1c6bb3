"""A compact terminal histogram: one column of eighth-blocks per bin, with its range.

Draws a :class:`~tuidebug.wire.layer_messages.Histogram` (fixed bins over [lo, hi], computed on
the device by the probe) in ``height`` lines: the bars, then ``lo … hi`` and the count of
non-finite values (which fall in no bin). Bins are spread over the width (each bin gets
``width // bins`` columns, at least one); counts can be drawn on a square-root scale so that a
few outliers next to a tall peak still show.
"""

from __future__ import annotations

import math

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style

from tuidebug.console.widgets.loss_chart import format_number
from tuidebug.wire.layer_messages import Histogram

__all__ = ["HistogramRenderable"]

_BLOCKS = " ▁▂▃▄▅▆▇█"


class HistogramRenderable:
    """A Rich renderable of one histogram.

    Args:
        histogram: The histogram (None: "no histogram yet").
        title: Shown before the range line (e.g. "act", "grad 0.weight").
        height: Lines in all, the range line included (>= 2).
        width: Width in cells; the console's when None.
        sqrt: Square-root count scale.
    """

    def __init__(
        self,
        histogram: Histogram | None,
        title: str = "",
        *,
        height: int = 4,
        width: int | None = None,
        sqrt: bool = True,
        bar_style: str = "cyan",
        label_style: str = "bright_black",
        bad_style: str = "bold red",
    ) -> None:
        self.histogram = histogram
        self.title = title
        self.height = max(2, height)
        self.width = width
        self.sqrt = sqrt
        self.bar_style = Style.parse(bar_style)
        self.label_style = Style.parse(label_style)
        self.bad_style = Style.parse(bad_style)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = self.width or options.max_width
        for line in self.render_lines(width):
            yield from line
            yield Segment.line()

    def render_lines(self, width: int) -> list[list[Segment]]:
        """``self.height`` lines of exactly ``width`` cells."""
        rows = self.height - 1
        h = self.histogram
        lines: list[list[Segment]] = []
        if h is None or not h.counts or not (math.isfinite(h.lo) and math.isfinite(h.hi)):
            text = f"{self.title}: " if self.title else ""
            if h is None:
                text += "no histogram yet"
            else:
                text += f"no histogram ({h.nonfinite} non-finite values)"
            for _ in range(rows):
                lines.append([Segment(" " * width)])
            lines.append([Segment(_fit(text, width), self.label_style)])
            return lines
        bins = len(h.counts)
        per = max(1, width // bins)
        shown = min(bins, width)
        scale = (lambda c: math.sqrt(c)) if self.sqrt else (lambda c: float(c))
        top = max((scale(c) for c in h.counts), default=0.0) or 1.0
        levels = [scale(c) / top * rows * 8 for c in h.counts[:shown]]
        for r in range(rows):
            base = (rows - 1 - r) * 8  # eighths below this line
            chars = []
            for level, count in zip(levels, h.counts[:shown], strict=True):
                fill = level - base
                if fill >= 8:
                    ch = _BLOCKS[8]
                elif fill > 0:
                    ch = _BLOCKS[max(1, int(fill))]
                elif r == rows - 1 and count > 0:
                    ch = _BLOCKS[1]  # a non-empty bin always shows
                else:
                    ch = " "
                chars.append(ch * per)
            text = "".join(chars)
            lines.append([Segment(_fit(text, width), self.bar_style)])
        label = f"{self.title} " if self.title else ""
        label += f"{format_number(h.lo)} … {format_number(h.hi)}  n={sum(h.counts):,}"
        segments = [Segment(label, self.label_style)]
        if h.nonfinite:
            segments.append(Segment(f"  {h.nonfinite} NaN/inf", self.bad_style))
        used = sum(len(s.text) for s in segments)
        if used > width:
            segments = [Segment(_fit(label, width), self.label_style)]
        else:
            segments.append(Segment(" " * (width - used)))
        lines.append(segments)
        return lines


def _fit(text: str, width: int) -> str:
    return text[:width].ljust(width)
