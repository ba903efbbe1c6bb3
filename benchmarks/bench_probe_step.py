"""What the probe costs per step, and what the pause gate adds while nothing is asked of it.

In one process, interleaved, on a small CPU training step (Linear(128,128)+ReLU+Linear(128,1),
batch 64, SGD): the bare loop; the loop under the probe (zero-code-change hooks, reporting into
an in-memory sink that stands in for the socket); the same with a break condition armed (the
gate then evaluates it at every boundary). Then, without training, the cost of one
`dbg.step(loss=...)` boundary with the gate idle and armed.

    python benchmarks/bench_probe_step.py [--steps N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import StepPoint


class Sink:
    """Stands in for the probe's socket link: keeps nothing, costs nothing."""

    def push_point(self, point: StepPoint) -> None:
        pass

    def send(self, message: Any) -> None:
        pass


def train(steps: int, probe: Probe | None) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 128), torch.randn(64, 1)
    if probe is not None:
        probe.install_auto_hooks()
    try:
        start = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps
    finally:
        if probe is not None:
            probe.remove_hooks()


def boundaries(calls: int, armed: bool) -> float:
    probe = Probe(Sink())  # type: ignore[arg-type]
    dbg = probe.attach()
    if armed:
        probe.gate.add_condition("loss > 1e9")
    start = time.perf_counter()
    for i in range(calls):
        dbg.step(loss=float(i))
    return (time.perf_counter() - start) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bare, probed, armed = [], [], []
    train(50, None)  # warm-up
    for _ in range(args.rounds):
        bare.append(train(args.steps, None))
        probed.append(train(args.steps, Probe(Sink())))  # type: ignore[arg-type]
        probe = Probe(Sink())  # type: ignore[arg-type]
        probe.gate.add_condition("loss > 1e9")
        armed.append(train(args.steps, probe))
    b, p, a = (statistics.median(v) for v in (bare, probed, armed))
    print(f"training step (median of {args.rounds} rounds x {args.steps} steps, 1 thread):")
    print(f"  bare            {b * 1e6:8.1f} us")
    print(f"  under the probe {p * 1e6:8.1f} us  ratio {p / b:.3f}")
    print(f"  + break armed   {a * 1e6:8.1f} us  ratio {a / b:.3f}")
    idle = statistics.median(boundaries(50_000, False) for _ in range(5))
    busy = statistics.median(boundaries(50_000, True) for _ in range(5))
    print("one dbg.step(loss=...) boundary, no training:")
    print(f"  gate idle       {idle * 1e6:8.2f} us (the gate: one attribute check)")
    print(f"  condition armed {busy * 1e6:8.2f} us (+{(busy - idle) * 1e6:.2f} us to evaluate it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
