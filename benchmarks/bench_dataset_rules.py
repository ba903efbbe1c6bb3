"""Cost of the data-set rules' reading of one input batch (checks/groups/dataset.py, issue 19
item 3).

On a sampled step, DatasetRules.on_forward hashes up to HASH_ROWS rows (HASH_COLS values each)
of a root model's first input and, for a training forward, takes per-feature numbers from at
most STAT_ELEMENTS values; outside windows an evaluation forward is hashed only (at most
EVAL_FORWARDS a step). Both are bounded by those constants, not by the batch: this times them
on small and large inputs (CPU), median of ``--repeat`` calls after a warm-up.

    .venv/bin/python benchmarks/bench_dataset_rules.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tuidebug.checks.groups.dataset import feature_stats, row_hashes

INPUTS: dict[str, tuple[Callable[[], torch.Tensor], int]] = {
    # name: (the batch, its feature axis)
    "tabular 128x32": (lambda: torch.randn(128, 32), 1),
    "tabular 4096x256": (lambda: torch.randn(4096, 256), 1),
    "sequences 64x200x16": (lambda: torch.randn(64, 200, 16), 2),
    "images 64x3x224x224": (lambda: torch.rand(64, 3, 224, 224), 1),
    "tokens 32x2048 (int64)": (lambda: torch.randint(0, 50000, (32, 2048)), -1),
}


def median_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)  # what one training step's spare core does; no pool warm-up effects
    print(f"{'input':<24} {'row_hashes us':>14} {'feature_stats us':>17}")
    for name, (make, axis) in INPUTS.items():
        x = make()
        hashes = median_us(lambda x=x: row_hashes(x), args.repeat)
        stats = (
            f"{median_us(lambda x=x, axis=axis: feature_stats(x, axis), args.repeat):>17.0f}"
            if x.is_floating_point()
            else f"{'(not a feature)':>17}"
        )
        print(f"{name:<24} {hashes:>14.0f} {stats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
