"""Cost of classifying every root-model forward (checks/engine.py, issue 19 item 1).

The checks engine hooks the found root models for the whole run: a pre-hook reads the mode,
grad mode and inference mode into a record, a post-hook registers a gradient hook on an output
that requires grad, and the records are judged one boundary later. This measures that against
the same loop without it, on bench_probe_overhead.py's model (8 x Linear(256) + ReLU, batch 128,
Adam, CPU), with an evaluation (under ``torch.no_grad()``, model.eval()) every ``--eval-every``
steps. Variants, interleaved in short shuffled rounds (see bench_probe_overhead.py for why):

- bare: the loop alone;
- boundary: the engine's step boundary called after each step, the model not registered (what
  the engine cost between windows before the root hooks);
- classify: the same, with the model registered: every forward classified.

Windows never open (``every`` is huge; the first window, opened at creation, is closed before
timing), so only the every-step work is timed. Printed: median step time, ratio to bare, and
classify against boundary (the root hooks alone), with the noise floor (bare's two halves).

    .venv/bin/python benchmarks/bench_forward_classify.py [--rounds 40] [--steps 12]
        [--eval-every 10] [--repeat 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import Variant

from tuidebug.checks.config import ChecksConfig
from tuidebug.checks.engine import ChecksEngine
from tuidebug.wire.messages import Message, StepPoint


class EvalVariant(Variant):
    """A training step, and every ``eval_every`` steps an evaluation forward after it."""

    def __init__(self, name: str, eval_every: int, engine: ChecksEngine | None) -> None:
        super().__init__(name)
        self.eval_every = eval_every
        self.engine = engine
        self.boundaries = 0

    def step(self) -> float:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        if self.engine is not None:
            self.boundaries += 1
            self.engine.on_boundary(self.boundaries, StepPoint(self.boundaries, 0.0, None), 0.0)
        if self.step_no % self.eval_every == 0:
            self.model.eval()
            with torch.no_grad():
                self.model(self.x)
            self.model.train()
        return time.perf_counter() - start


def run(rounds: int, steps: int, eval_every: int) -> dict[str, Any]:
    sent: list[Message] = []
    engine = ChecksEngine(sent.append, 0, ChecksConfig(), every=10**9)
    engine.on_boundary(0, StepPoint(0, 0.0, None), 0.0)  # closes the window opened at creation
    variants = [
        EvalVariant("bare", eval_every, None),
        EvalVariant("bare (2nd half)", eval_every, None),
        EvalVariant("boundary", eval_every, engine),
        EvalVariant("classify", eval_every, engine),
    ]
    engine.on_model("classify", variants[3].model)
    for variant in variants:  # warm up
        for _ in range(5):
            variant.step()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(rounds):
        order = variants[:]
        random.shuffle(order)
        for variant in order:
            for _ in range(steps):
                times[variant.name].append(variant.step())
    engine.close()
    # What the mode rules counted: every forward of the registered model, classified.
    modes = next(g for g in engine._groups if hasattr(g, "counts"))
    classified = dict(modes.counts)  # type: ignore[attr-defined]
    assert not engine.failed  # (alerts on the first, sampled, warm-up steps are fine: same batch)
    medians = {name: statistics.median(values) for name, values in times.items()}
    bare = statistics.median(times["bare"] + times["bare (2nd half)"])
    return {"medians": medians, "bare": bare, "classified": classified}


def report(result: dict[str, Any]) -> str:
    medians, bare = result["medians"], result["bare"]
    lines = [f"{'variant':<16} {'median ms':>10} {'x bare':>8}"]
    for name, value in medians.items():
        lines.append(f"{name:<16} {value * 1e3:>10.3f} {value / bare:>8.3f}")
    ratio = medians["classify"] / medians["boundary"]
    lines.append(f"classify / boundary (root hooks alone): {ratio:.3f}")
    lines.append(f"forwards classified: {result['classified']}")
    lines.append(
        f"noise floor (bare halves): {medians['bare (2nd half)'] / medians['bare']:.3f}; "
        f"per step, classify - boundary = "
        f"{(medians['classify'] - medians['boundary']) * 1e6:.0f} us"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        print(report(run(args.rounds, args.steps, args.eval_every)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
