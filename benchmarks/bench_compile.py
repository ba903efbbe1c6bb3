"""Cost of the probe on a compiled model: compiled bare against compiled + probe, in one process.

The model, its step and the interleaving are those of ``bench_probe_overhead.py`` (imported
from there: 8 x (Linear(256, 256) + ReLU) + Linear(256, 10), batch 128, Adam, CPU), the model
wrapped once in ``torch.compile`` (``--backend``, inductor by default) and shared by every
variant, so that dynamo compiles it once: a variant's hooks are on only during its own rounds.
Variants, in shuffled order each round of ``--steps`` steps:

- compiled bare: the compiled model's loop alone (twice: its two halves are the noise floor);
- compiled + probe: the probe's step boundary (its optimizer hook) and the layer sampler with
  the default budget, fed by the probe's boundary as in a run. For a compiled model that is
  the every-step work only (the root pre-hook on torch.compile's eager wrapper, the tripwire):
  layer statistics of a compiled model are off unless asked for (docs/layers.md,
  "torch.compile");
- compiled + stats/10: the same with ``--stats-every 10``: every tenth step runs eagerly
  under the sampler's hooks (the cost of asking for layer statistics on a compiled model).

The probe is the real one, in this process, with its auto hooks installed before the model is
compiled (``torch.compile`` is wrapped, as under ``tuidebug run``), sending nowhere. Printed:
the median step time per variant and its ratio to the compiled bare loop (pooled median and
paired per round), and dynamo's counters over the timed rounds (graphs compiled, graph breaks,
recompiles): they must not move while the probe runs.

    .venv/bin/python benchmarks/bench_compile.py [--rounds 30] [--steps 12] [--backend inductor]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe_overhead import (
    SamplerVariant,
    Unit,
    Variant,
    _VariantObserver,
    make_model,
)

from tuidebug.probe.layers import LayerSampler
from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import Message


class CompiledProbeVariant(SamplerVariant):
    """The probe's boundary and its layer sampler on the compiled model, as the probe sets it
    up for a model the script compiled: the original module, the compiled ones noted."""

    def __init__(self, name: str, probe: Probe, every: int | None, unit: Unit) -> None:
        Variant.__init__(self, name, unit)
        self.probe = probe
        sent: list[Message] = []
        inner = getattr(self.model, "_orig_mod", self.model)
        self.sampler = LayerSampler(
            sent.append, 0, every=every, loss_source=probe.current_loss, compiled=probe.compiled
        )
        self.sampler.add_model(name.replace(" ", "-"), inner)
        self.sampler.add_optimizer(self.opt)
        self.sampler.suspend()
        self.observer = _VariantObserver(self)
        self.sent = sent


def counters() -> tuple[int, int, int]:
    from torch._dynamo.utils import counters as c

    return (
        c["stats"]["unique_graphs"],
        sum(c["graph_break"].values()),
        sum(c["recompiles"].values()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=12, help="steps per round")
    parser.add_argument("--warmup", type=int, default=30, help="steps per variant first")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    args = parser.parse_args()

    probe = Probe(None)
    probe.install_auto_hooks()  # before the compile, as under tuidebug run
    model, opt = make_model()
    compiled = torch.compile(model, backend=args.backend)
    unit: Unit = (compiled, opt, torch.randn(128, 256), torch.randint(0, 10, (128,)))  # type: ignore[assignment]
    start = time.perf_counter()
    variants: list[Variant] = [
        Variant("compiled bare", unit),
        Variant("compiled bare", unit),
        CompiledProbeVariant("compiled + probe", probe, None, unit),
        CompiledProbeVariant("compiled + stats/10", probe, 10, unit),
    ]
    try:
        for v in variants:
            probe.disabled = not v.uses_probe
            v.before()
            for _ in range(args.warmup):
                v.step()
            v.settle()
        print(f"compile and warm-up: {time.perf_counter() - start:.1f} s ({args.backend})")
        before = counters()
        gc.collect()
        gc.freeze()
        order = random.Random(0)
        for _ in range(args.rounds):
            for v in order.sample(variants, len(variants)):
                probe.disabled = not v.uses_probe  # the probe's boundary in its variants only
                v.before()
                v.times.append([v.step() for _ in range(args.steps)])
                v.settle()
                gc.collect()
        gc.unfreeze()
        after = counters()
    finally:
        probe.disabled = False
        for v in variants:
            if isinstance(v, SamplerVariant):
                v.sampler.close()
        probe.remove_hooks()
    print(report(variants, args.rounds, before, after, torch.get_num_threads()))
    return 0


def report(
    variants: list[Variant],
    rounds: int,
    before: tuple[int, ...],
    after: tuple[int, ...],
    threads: int,
) -> str:
    bare = [v for v in variants if v.name == "compiled bare"]

    def pooled(group: list[Variant]) -> float:
        return statistics.median(t for v in group for r in v.times for t in r)

    def paired(group: list[Variant]) -> float:
        return statistics.median(
            statistics.median(v.times[i]) / statistics.median(bare[0].times[i])
            for v in group
            for i in range(rounds)
        )

    base = pooled(bare)
    lines = [
        f"8 x (Linear(256,256)+ReLU) + Linear(256,10), batch 128, Adam, CPU, {threads} threads,"
        " compiled once, shared by the variants",
        f"{'variant':<22}{'median ms':>10}{'ratio':>8}{'paired':>8}  notes",
    ]
    for name in dict.fromkeys(v.name for v in variants):
        group = [v for v in variants if v.name == name]
        notes = ""
        if isinstance(group[0], SamplerVariant):
            notes = f"{group[0].sampler.samples} samples"
        lines.append(
            f"{name:<22}{pooled(group) * 1e3:>10.3f}{pooled(group) / base:>7.3f}x"
            f"{paired(group):>7.3f}x  {notes}"
        )
    lines.append(
        f"noise floor (bare's two copies): {pooled(bare[1:]) / pooled(bare[:1]):.3f}x, "
        f"paired {paired(bare[1:]):.3f}x"
    )
    names = ("graphs", "graph breaks", "recompiles")
    moved: dict[str, Any] = {n: b - a for n, a, b in zip(names, before, after, strict=True)}
    lines.append(
        "dynamo over the timed rounds: "
        + ", ".join(f"{n} +{d}" for n, d in moved.items())
        + f" (totals: {', '.join(f'{n} {t}' for n, t in zip(names, after, strict=True))})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
