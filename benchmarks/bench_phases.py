"""What the step-time breakdown costs per step, and what a profiler capture costs while it runs.

The model, batch and optimizer of ``bench_probe_overhead.py`` (8 x Linear(256) MLP, batch 128,
Adam, CPU), each step's batch drawn from a DataLoader (so the breakdown's ``__next__`` wrapper
is on the path, as in a real script). Variants, interleaved in short rounds in one process
(the shuffled order and short rounds of ``bench_probe_overhead.py``, for the same reasons):

- bare: the loop alone, on twice the copies (its halves against each other: the noise floor);
- boundary: the probe's step boundary (its global hooks, an in-memory sink for its messages),
  breakdown off;
- boundary + breakdown: the same with the step-time breakdown (``probe/phases.py``) on;
- default + breakdown: the layer sampler at its default budget as well: the figure the
  project's target (<= 1.02x) is about;
- profiling: bare steps inside a running ``torch.profiler`` capture set up as
  ``probe/extensions/profile.py`` sets it (CPU activity, shapes, memory): the cost of a
  capture while it runs, with the time to stop it and write its trace printed apart.

Ratios are of median step times against bare's; "paired" is the median over rounds and copies
of a copy's round median against bare's copy's in the same round.

    .venv/bin/python benchmarks/bench_phases.py [--rounds 40] [--steps 12] [--copies 3]
        [--no-profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import SamplerVariant, Unit, Variant

from tuidebug.probe.phases import PhaseClock
from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import Message, StepPoint


class Sink:
    """Stands in for the probe's socket link: counts messages, keeps nothing."""

    def __init__(self) -> None:
        self.messages = 0

    def push_point(self, point: StepPoint) -> None:
        pass

    def send(self, message: Message) -> None:
        self.messages += 1


class Batches(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """The same batch forever, through a real DataLoader iterator."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.x, self.y


class LoaderVariant(Variant):
    """``Variant``'s step with its batch drawn from a DataLoader."""

    _batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def step(self) -> float:
        if self._batches is None:
            self._batches = iter(DataLoader(Batches(self.x, self.y), batch_size=None))
        start = time.perf_counter()
        x, y = next(self._batches)
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        self.after_step(float(loss.detach()))
        return time.perf_counter() - start


class BoundaryLoader(LoaderVariant):
    uses_probe = True


class SamplerLoader(LoaderVariant, SamplerVariant):
    """The layer sampler at its default budget, fed by the probe's boundary."""


class Phased:
    """Adds the breakdown to a variant during its own rounds only (its ``__next__`` wrapper and
    optimizer pre-hook are global; its root hooks are on this variant's model)."""

    def __init__(self, inner: Variant, probe: Probe, sink: Sink) -> None:
        self.inner, self.probe, self.sink = inner, probe, sink
        self.name = inner.name
        self.uses_probe = True
        self.clock: PhaseClock | None = None
        self.steps = 0
        self.folded = 0.0

    @property
    def times(self) -> list[list[float]]:
        return self.inner.times

    def before(self) -> None:
        self.inner.before()
        self.clock = PhaseClock(self.sink.send, 0)
        self.clock.on_model(self.name, self.inner.model)
        self.probe.phases = self.clock

    def step(self) -> float:
        return self.inner.step()

    def settle(self) -> None:
        assert self.clock is not None
        self.clock.close()
        self.probe.phases = None
        self.inner.settle()


class Profiled(LoaderVariant):
    """Bare steps inside a running profiler capture (started and stopped outside the timing)."""

    def __init__(self, name: str, unit: Unit | None = None) -> None:
        super().__init__(name, unit)
        self.profiler: Any = None
        self.stops: list[float] = []
        self.trace_bytes = 0

    def before(self) -> None:
        from tuidebug.probe.extensions.profile import make_profiler

        self.profiler = make_profiler(cuda=False)
        self.profiler.start()

    def settle(self) -> None:
        start = time.perf_counter()
        self.profiler.stop()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "trace.json"
            self.profiler.export_chrome_trace(str(path))
            self.trace_bytes = path.stat().st_size
        self.stops.append(time.perf_counter() - start)
        self.profiler = None


def run(rounds: int, steps: int, warmup: int, copies: int, profile: bool) -> dict[str, Any]:
    sink = Sink()
    probe = Probe(sink)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    makers: dict[str, Callable[[str], Any]] = {
        "bare": LoaderVariant,
        "boundary": BoundaryLoader,
        "boundary + breakdown": lambda name: Phased(BoundaryLoader(name), probe, sink),
        "default + breakdown": lambda name: Phased(
            SamplerLoader(name, sink.send, None, probe), probe, sink
        ),
    }
    if profile:
        makers["profiling"] = Profiled
    variants = [
        make(name)
        for name, make in makers.items()
        for _ in range(2 * copies if name == "bare" else copies)
    ]
    # The probe's first step finds the models (a global forward hook until step 1 ends): done
    # once here, before any variant's rounds.
    for v in variants:
        probe.disabled = not v.uses_probe
        v.before()
        for _ in range(warmup):
            v.step()
        v.settle()
    gc.collect()
    gc.freeze()
    order = random.Random(0)
    for _ in range(rounds):
        for v in order.sample(variants, len(variants)):
            probe.disabled = not v.uses_probe
            v.before()
            v.times.append([v.step() for _ in range(steps)])
            v.settle()
            gc.collect()
    gc.unfreeze()
    probe.disabled = False
    probe.remove_hooks()
    names = list(makers)
    bare = [v for v in variants if v.name == "bare"]
    first, second = bare[:copies], bare[copies:]

    def pooled(group: list[Any]) -> float:
        return statistics.median(t for v in group for r in v.times for t in r)

    def paired(group: list[Any]) -> float:
        return statistics.median(
            statistics.median(v.times[i]) / statistics.median(b.times[i])
            for v, b in zip(group, first, strict=False)
            for i in range(rounds)
        )

    base = pooled(bare)
    rows = []
    for name in names:
        group = [v for v in variants if v.name == name]
        median = pooled(group)
        row: dict[str, Any] = {
            "variant": name,
            "ms_median": median * 1e3,
            "ratio_median": median / base,
            "ratio_paired": paired(group),
        }
        if name == "profiling":
            stops = [s for v in group for s in v.stops]
            row["stop_and_export_ms"] = statistics.median(stops) * 1e3
            row["trace_bytes"] = group[0].trace_bytes
            row["steps_per_capture"] = steps
        rows.append(row)
    for v in variants:
        sampler = getattr(getattr(v, "inner", v), "sampler", None)
        if sampler is not None:
            sampler.close()
    return {
        "threads": torch.get_num_threads(),
        "rows": rows,
        "noise_floor": {"median": pooled(second) / pooled(first), "paired": paired(second)},
        "messages": sink.messages,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "8 x (Linear(256,256)+ReLU) + Linear(256,10), batch 128 from a DataLoader, Adam, CPU, "
        f"{results['threads']} threads",
        f"{'variant':<22}{'median ms':>10}{'ratio':>8}{'paired':>8}  notes",
    ]
    for r in results["rows"]:
        notes = ""
        if "stop_and_export_ms" in r:
            notes = (
                f"stop + write trace {r['stop_and_export_ms']:.0f} ms per "
                f"{r['steps_per_capture']}-step capture ({r['trace_bytes'] / 1e6:.1f} MB)"
            )
        lines.append(
            f"{r['variant']:<22}{r['ms_median']:>10.3f}{r['ratio_median']:>7.3f}x"
            f"{r['ratio_paired']:>7.3f}x  {notes}"
        )
    floor = results["noise_floor"]
    lines.append(
        f"noise floor (bare's two halves): {floor['median']:.3f}x, paired {floor['paired']:.3f}x"
    )
    lines.append("target: default + breakdown <= 1.02x (median step ratio)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true", help="leave the capture out")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results = run(args.rounds, args.steps, args.warmup, args.copies, not args.no_profile)
    print(report(results), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
