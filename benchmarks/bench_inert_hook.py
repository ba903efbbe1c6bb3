"""Cost of `dbg.step()` outside `tuidebug run` (the inert hook), against an empty loop.

Target (issue 2): under 2 microseconds a call. Both loops are timed in the same run,
interleaved, and the median of the repetitions is reported.

    python benchmarks/bench_inert_hook.py [--calls N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import tuidebug


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    dbg = tuidebug.attach(object())
    assert not dbg.active, "run this outside `tuidebug run`"
    loss, lr = 0.5, 1e-3

    def empty(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            pass
        return time.perf_counter() - start

    def hooked(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            dbg.step(loss=loss, lr=lr)
        return time.perf_counter() - start

    empty_times, hook_times = [], []
    for _ in range(args.repeats):
        empty_times.append(empty(args.calls))
        hook_times.append(hooked(args.calls))
    per_call = (statistics.median(hook_times) - statistics.median(empty_times)) / args.calls
    print(
        f"inert dbg.step(loss=..., lr=...): {per_call * 1e9:.0f} ns per call "
        f"(target < 2000 ns; {args.calls:,} calls x {args.repeats} repeats, median)"
    )
    return 0 if per_call < 2e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
