"""How long the loss chart takes to draw, at 1,000 and at 1,000,000 points.

The chart draws from a MinMaxHistory's fixed number of buckets, so its draw time must not grow
with the run's length. Targets (issue 2): the draw at 1M points within 2x of the draw at 1k,
and under one 60 Hz frame (16.7 ms). Also prints MinMaxHistory.append's rate: the console folds
up to ~10,000 points a second into it.

    python benchmarks/bench_chart.py [--quick]

Exits with status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import statistics
import sys
import time

from rich.console import Console

from tuidebug.console.history import MinMaxHistory
from tuidebug.console.widgets.loss_chart import LossChartRenderable

FRAME_S = 1 / 60
WIDTH, HEIGHT = 120, 20


def make_history(n: int, seed: int = 0) -> MinMaxHistory:
    rng = random.Random(seed)
    h = MinMaxHistory()
    append = h.append
    for step in range(n):
        v = 2.0 * math.exp(-step / (n / 5)) + 0.1 + 0.05 * rng.random()
        if step % 9973 == 0:
            v *= 5  # spikes, so the bars have work to do
        append(step, v)
    return h


def time_draw(h: MinMaxHistory, reps: int, log_scale: bool) -> float:
    """Median seconds to render the chart to a Rich console (Segments and ANSI text)."""
    console = Console(
        file=io.StringIO(),
        width=WIDTH,
        height=HEIGHT,
        color_system="truecolor",
        force_terminal=True,
        legacy_windows=False,
    )
    renderable = LossChartRenderable(h, width=WIDTH, height=HEIGHT, log_scale=log_scale)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        console.print(renderable)
        times.append(time.perf_counter() - t0)
        console.file = io.StringIO()  # do not let the buffer grow
    return statistics.median(times)


def time_append(n: int) -> float:
    """Appends per second, including the merges."""
    h = MinMaxHistory()
    values = [1.0 + (i % 7) * 0.1 for i in range(n)]
    append = h.append
    t0 = time.perf_counter()
    for step, v in enumerate(values):
        append(step, v)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI)")
    args = parser.parse_args(argv)
    reps = 30 if args.quick else 200

    small, large = make_history(1_000), make_history(1_000_000)
    ok = True
    print(f"chart {WIDTH}x{HEIGHT} cells, median of {reps} draws")
    for log_scale in (False, True):
        t_small = time_draw(small, reps, log_scale)
        t_large = time_draw(large, reps, log_scale)
        ratio = t_large / t_small
        good = ratio <= 2.0 and t_large < FRAME_S
        ok &= good
        scale = "log" if log_scale else "linear"
        print(
            f"  {scale:6s} 1k points: {t_small * 1e3:6.2f} ms   1M points: {t_large * 1e3:6.2f} ms"
            f"   ratio {ratio:4.2f}   {'ok' if good else 'MISSED (target: ratio <= 2, < 16.7 ms)'}"
        )
    n = 200_000 if args.quick else 1_000_000
    rate = time_append(n)
    print(f"append: {rate / 1e6:.2f} M points/s ({1e6 / rate:.2f} µs each) over {n:,} points")
    if rate < 10_000:
        ok = False
        print("  MISSED (target: 10,000 points/s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
