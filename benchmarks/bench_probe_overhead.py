"""Overhead of the layer sampler against a bare loop and TensorBoard, in one process.

Model: 8 x (Linear(256, 256) + ReLU) + Linear(256, 10), batch 128, Adam, CPU. Variants, run
interleaved in many short rounds so that machine noise hits them all alike:

- bare: the training loop alone, on twice the copies (every ratio is against it; its two
  halves against each other are the run's noise floor);
- probe boundary: the loop with the probe's own step boundary (under ``--supervised``: the
  probe's optimizer hook, its step point sent to the supervisor) and no layer sampler, to tell
  the boundary's cost from the sampler's;
- probe default: the LayerSampler with the default budget (1% of step time);
- probe every step: the LayerSampler sampling every step;
- naive mean+std: a forward hook on every module computing mean and std each step (the issue
  quotes 1.2-1.6x for it on this model);
- tensorboard/10: SummaryWriter, every 10 steps: a scalar per layer (activation mean and std,
  gradient norm) plus add_histogram of every weight and gradient.

The order of the variants is shuffled each round, and after each round (untimed) the TensorBoard
writer is flushed, garbage is collected and, under a supervisor, the probe's link is let send its
last batch: work left running in the background (TensorBoard's writer thread, the probe's I/O
thread) used to be timed in the next variant's round and made "bare" look slow. The sampler's
global forward hook is parked between its rounds, or it would fire for the other models.

Each variant runs on ``--copies`` models of its own (3 by default), each a unit of the shuffled
order, and their step times are pooled. Rounds are short (12 steps, ~0.15 s): the machine's
speed drifts over seconds, and what one model's time seemed to carry as an offset of its own
was mostly that drift. Measured with six bare copies in one process: rounds of 40 steps (12
rounds) left their medians 4-10% apart, rounds of 12 steps (40 rounds) 1.5-3%; swapping the
models' tensors between copies each round (``--rotate``, a check for where they landed in
memory) changed nothing there.

Printed per variant: the median step time (the target's figure), its ratio to the bare loop,
the 10th percentile, and the median over rounds of the round's mean step time (sampled steps
included, so an occasional expensive step counts) as a ratio.

Where the sampler's messages go: under ``tuidebug run`` (``--supervised`` starts one:
``tuidebug run --detach`` with a real supervisor) they go through the probe's link, encoded and
written to the supervisor's socket by the probe's I/O thread; otherwise into an in-memory list
(the output says which). The probe's own step-boundary work is switched off during the bare and
TensorBoard rounds, so "bare" is bare. Under a supervisor the sampler is fed as in a run: the
probe's layers observer, called at the probe's step boundary with the probe's loss and the
probe's own time on the step (the budget covers the whole probe). No console is attached, so
the probe's link sends 4 batches a second, as in a run nobody watches; ``--watched`` attaches
a console for the whole run (it reads every message and draws nothing: the link then sends 20
batches a second and the supervisor fans each out to it).

``--same-models``: copy k of every variant trains the same model k (one optimizer, one batch),
each variant's hooks on only during its own rounds (the samplers suspended, the naive hooks
removed, outside them). Each model's own speed (copies of one variant otherwise spread
several percent over a whole run, whatever moves their tensors) then cancels in the paired
ratio. The probe boundary and TensorBoard variants need nothing switched.

The noise floor printed under the table: bare's first half of copies against its second
half, two identical loops (on the 2-core machines here the copies of one variant spread
several percent, and the halves land 1-5% apart: a ratio inside that says nothing).
"paired" is the median, over rounds and copies, of copy k's median step in a round against
bare's copy k's in the same round (drift between rounds cancels, and under ``--same-models``
each model's own speed; a round holding a sampled step counts it more than the pooled median
does).

    .venv/bin/python benchmarks/bench_probe_overhead.py [--rounds 40] [--steps 12] [--copies 3]
        [--supervised] [--repeat N] [--only "probe boundary,probe default"]
        [--rotate | --same-models]

On a shared 2-core machine one run's ratios move by several percent from run to run: repeat
it (``--repeat N`` prints each run and the median of the runs' ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuidebug.probe.extensions.layers import LayersObserver
from tuidebug.probe.layers import LayerSampler
from tuidebug.wire.messages import Message, StepPoint


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(8):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(256, 10))
    return model, torch.optim.Adam(model.parameters(), lr=1e-4)


Body = tuple[list[torch.Tensor], list[dict[str, Any]], torch.Tensor, torch.Tensor]
Unit = tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]
"""A model, its optimizer and its batch: what a variant trains (its own, or shared with the
other variants under ``--same-models``)."""


def make_unit() -> Unit:
    model, opt = make_model()
    return model, opt, torch.randn(128, 256), torch.randint(0, 10, (128,))


class Variant:
    """One way of running the loop; ``step()`` runs and times one training step."""

    uses_probe = False
    """Whether the probe's own step boundary runs during this variant's rounds."""

    def __init__(self, name: str, unit: Unit | None = None) -> None:
        self.name = name
        self.model, self.opt, self.x, self.y = unit if unit is not None else make_unit()
        self.step_no = 0
        self.times: list[list[float]] = []

    def body(self) -> Body:
        """What the step reads and writes in place: weights, optimizer state, batch."""
        params = list(self.model.parameters())
        return [p.data for p in params], [self.opt.state[p] for p in params], self.x, self.y

    def take(self, body: Body) -> None:
        """Train on ``body`` (another unit's, same architecture) from now on; the modules,
        parameters and hooks stay this variant's own."""
        data, states, self.x, self.y = body
        for p, d, state in zip(self.model.parameters(), data, states, strict=True):
            p.data = d
            self.opt.state[p] = state

    def before(self) -> None:
        """Called before each round."""

    def after_step(self, loss: float) -> None:
        """Called after each step (inside the timed region)."""

    def settle(self) -> None:
        """Called after each round, untimed: finish background work."""

    def step(self) -> float:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        self.after_step(float(loss.detach()))
        return time.perf_counter() - start


class BoundaryVariant(Variant):
    """The bare loop with the probe's step boundary switched on (no sampler)."""

    uses_probe = True


class SamplerVariant(Variant):
    """The layer sampler on this variant's model. Under a probe (``--supervised``) it is fed as
    in a run: the probe's step boundary calls it as an observer, with the probe's loss and the
    probe's own time on the step (its budget covers both); otherwise after each step."""

    uses_probe = True

    def __init__(
        self,
        name: str,
        send: Callable[[Message], None],
        every: int | None,
        probe: Any = None,
        unit: Unit | None = None,
    ) -> None:
        super().__init__(name, unit)
        self.probe = probe
        self.sampler = LayerSampler(
            send, 0, every=every, loss_source=probe.current_loss if probe is not None else None
        )
        self.sampler.add_model(name.replace(" ", "-"), self.model)
        self.sampler.add_optimizer(self.opt)
        self.sampler.suspend()  # hooked only during its own rounds (before/settle)
        self.observer = _VariantObserver(self) if probe is not None else None

    def after_step(self, loss: float) -> None:
        if self.observer is None:
            self.sampler.on_boundary(self.step_no, time.perf_counter(), loss)

    def before(self) -> None:
        self.sampler.resume()
        if self.observer is not None:
            self.probe.observers[:] = [self.observer]

    def settle(self) -> None:
        # Out of the other variants' rounds: its global forward hook would fire for their
        # modules, its root and optimizer hooks for its model when another variant shares it.
        self.sampler.suspend()
        if self.observer is not None:
            self.probe.observers.clear()


class _VariantObserver(LayersObserver):
    """The probe's layers observer, numbering steps by its variant's own count (the probe's
    count runs on through the other variants' rounds, and would look like skipped steps)."""

    def __init__(self, variant: SamplerVariant) -> None:
        super().__init__(variant.sampler, variant.probe)
        self.variant = variant

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        # Called inside opt.step(), before the variant counts the step.
        return super().on_boundary(self.variant.step_no + 1, point, now)


class NaiveHookVariant(Variant):
    """The issue's yardstick: a forward hook on every module that computes the output's mean and
    std every step (read to the host, as a logging call would)."""

    def __init__(self, name: str, unit: Unit | None = None) -> None:
        super().__init__(name, unit)
        self.seen: list[float] = []
        self.handles: list[Any] = []

    def before(self) -> None:
        self.handles = [m.register_forward_hook(self._hook) for m in self.model.modules()]

    def settle(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        d = output.detach()
        self.seen += (d.mean().item(), d.std().item())

    def after_step(self, loss: float) -> None:
        self.seen.clear()


class TensorBoardVariant(Variant):
    def __init__(self, name: str, logdir: str, every: int = 10, unit: Unit | None = None) -> None:
        super().__init__(name, unit)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(logdir)
        self.every = every
        self.acts: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []
        self.names = {m: n for n, m in self.model.named_modules() if n}

    def settle(self) -> None:
        self.writer.flush()

    def _hook(self, module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        name = self.names[module]
        self.writer.add_scalar(f"act_mean/{name}", output.detach().mean().item(), self.step_no)
        self.writer.add_scalar(f"act_std/{name}", output.detach().std().item(), self.step_no)

    def step(self) -> float:
        logging = (self.step_no + 1) % self.every == 0
        start = time.perf_counter()
        if logging:
            self.handles = [m.register_forward_hook(self._hook) for m in self.names]
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        value = float(loss.detach())
        if logging:
            for h in self.handles:
                h.remove()
            self.writer.add_scalar("loss", value, self.step_no)
            for name, p in self.model.named_parameters():
                self.writer.add_histogram(f"weight/{name}", p.detach(), self.step_no)
                if p.grad is not None:
                    self.writer.add_histogram(f"grad/{name}", p.grad, self.step_no)
                    self.writer.add_scalar(f"grad_norm/{name}", p.grad.norm().item(), self.step_no)
        return time.perf_counter() - start


def run(
    rounds: int,
    steps: int,
    warmup: int,
    copies: int = 1,
    only: list[str] | None = None,
    rotate: bool = False,
    same_models: bool = False,
) -> dict[str, Any]:
    from tuidebug.probe import runtime

    probe: Any = runtime.current()
    link = getattr(probe, "link", None)
    sent: list[Message] = []
    if probe is not None:
        # The probe's own extensions (its layer sampler, the checks) would follow the
        # benchmark's models too, the bare one included: only the variants' samplers measure
        # here. The probe keeps its link and its step boundaries (on the probe variants only).
        for observer in probe.observers:
            observer.close()
        probe.observers.clear()
    if link is not None:
        sink = "the supervisor's socket (tuidebug run)"
        send: Callable[[Message], None] = link.send
    else:
        sink = "an in-memory list (no supervisor)"
        send = sent.append
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as logdir:
        # Each variant runs on `copies` models of its own, pooled (see the module docstring).
        makers: dict[str, Callable[[str, Unit | None], Variant]] = {
            "bare": Variant,
            "probe boundary": BoundaryVariant,
            "probe default": lambda name, unit: SamplerVariant(name, send, None, probe, unit),
            "probe every step": lambda name, unit: SamplerVariant(name, send, 1, probe, unit),
            "naive mean+std": NaiveHookVariant,
        }
        if importlib.util.find_spec("tensorboard") is not None:
            makers["tensorboard/10"] = lambda name, unit: TensorBoardVariant(
                name, logdir, unit=unit
            )
        else:
            print("(tensorboard is not installed: `pip install tensorboard` adds the comparison)")
        if only:
            # A quicker run of a few variants; "bare" stays, every ratio is against it.
            unknown = set(only) - set(makers)
            if unknown:
                raise SystemExit(f"unknown variants {sorted(unknown)}; known: {list(makers)}")
            makers = {n: m for n, m in makers.items() if n == "bare" or n in only}
        # Twice the copies for the baseline: it is in every ratio, and its halves are an A/A pair.
        # Under --same-models copy k of every variant (both of bare's) trains model k.
        units: list[Unit | None] = (
            [make_unit() for _ in range(copies)] if same_models else [None] * copies
        )
        variants = [
            make(name, units[k % copies])
            for name, make in makers.items()
            for k in range(2 * copies if name == "bare" else copies)
        ]
        names = list(dict.fromkeys(v.name for v in variants))
        for v in variants:
            if probe is not None:
                probe.disabled = not v.uses_probe
            v.before()
            for _ in range(warmup):
                v.step()
            v.settle()
        # What exists now (torch, TensorBoard, the models) is never garbage: out of the
        # collector's sight, the full collection after each round costs <1 ms, not ~200.
        gc.collect()
        gc.freeze()
        order = random.Random(0)
        for _ in range(rounds):
            # A different order each round, so that no variant always follows the same one.
            for v in order.sample(variants, len(variants)):
                # The probe's own boundaries (optimizer hook) only for the variants that use it.
                if probe is not None:
                    probe.disabled = not v.uses_probe
                v.before()
                v.times.append([v.step() for _ in range(steps)])
                # Untimed: leave nothing running into the next variant's round (TensorBoard
                # writes its events from a background thread; garbage left for the collector).
                v.settle()
                gc.collect()
                if link is not None:
                    # The probe's I/O thread sends a batch every 50 ms: let the round's last
                    # one go before the next variant's round (it would be timed there).
                    deadline = time.monotonic() + 1.0
                    while not link.idle() and time.monotonic() < deadline:
                        time.sleep(0.002)
            if rotate:
                # Deal the bodies out again: each unit's tensors sit where they landed in
                # memory, which can make a model's step a few percent faster or slower.
                bodies = [v.body() for v in variants]
                order.shuffle(bodies)
                for v, body in zip(variants, bodies, strict=True):
                    v.take(body)
        gc.unfreeze()
        if probe is not None:
            probe.disabled = False
        for v in variants:
            if isinstance(v, TensorBoardVariant):
                v.writer.close()
        results: dict[str, Any] = {"sink": sink, "threads": torch.get_num_threads()}
        if link is not None:
            # The pace the supervisor set: 4 batches a second unwatched, 20 with a console.
            results["sink"] += f", {1 / link.interval:.0f} batches/s"
            results["link_interval"] = link.interval
        times = {name: [r for v in variants if v.name == name for r in v.times] for name in names}
        halves = [v for v in variants if v.name == "bare"]
        first, second = halves[: len(halves) // 2], halves[len(halves) // 2 :]

        def pooled(units: list[Variant]) -> float:
            """The median step of these units, all rounds."""
            return statistics.median(t for v in units for r in v.times for t in r)

        def paired(group: list[Variant]) -> float:
            # Copy k's median in each round against bare's copy k's in the same round (under
            # --same-models the same model): drift between rounds and each model's own offset
            # cancel.
            return statistics.median(
                statistics.median(v.times[i]) / statistics.median(b.times[i])
                for v, b in zip(group, first, strict=False)
                for i in range(rounds)
            )

        base_mean = statistics.median(statistics.fmean(r) for r in times["bare"])
        base_median = pooled(halves)
        results["noise_floor"] = {
            "median": pooled(second) / pooled(first),
            "paired": paired(second),
        }
        rows = []
        for name in names:
            group = [v for v in variants if v.name == name]
            v = group[0]
            mean = statistics.median(statistics.fmean(r) for r in times[name])
            median = pooled(group)
            row = {
                "variant": name,
                "copies": len(group),
                "ms_per_step": mean * 1e3,
                "ms_median": median * 1e3,
                "ms_p10": statistics.quantiles([t for r in times[name] for t in r], n=10)[0] * 1e3,
                "ratio_mean": mean / base_mean,
                "ratio_median": median / base_median,
                "ratio_paired": paired(group),
                # Each copy's median against the pooled bare median: the spread between
                # copies of one variant is the placement noise the pooling averages out.
                "copy_ratios": [pooled([g]) / base_median for g in group],
            }
            if isinstance(v, SamplerVariant):
                row["samples"] = v.sampler.samples
                row["interval"] = v.sampler.schedule.interval()
                cost = v.sampler.schedule.cost
                row["cost_ms"] = cost * 1e3 if cost is not None else None
                # What it costs on every step, sampled or not (root pre-hook, tripwire).
                row["every_step_us"] = v.sampler.schedule.per_step * 1e6
            for g in group:
                if isinstance(g, SamplerVariant):
                    g.sampler.close()
            rows.append(row)
        results["rows"] = rows
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "8 x (Linear(256,256)+ReLU) + Linear(256,10), batch 128, Adam, CPU, "
        f"{results['threads']} threads; messages to {results['sink']}",
        f"{'variant':<18}{'ms/step':>9}{'median':>8}{'p10':>7}{'mean ratio':>12}"
        f"{'median ratio':>14}{'paired':>8}  notes",
    ]
    for r in results["rows"]:
        notes = ""
        if "samples" in r:
            cost = f"{r['cost_ms']:.2f} ms" if r["cost_ms"] is not None else "?"
            notes = (
                f"{r['samples']} samples, interval {r['interval']}, {cost}/sample, "
                f"{r['every_step_us']:.0f} us every step; "
            )
        if len(r.get("copy_ratios", ())) > 1:
            notes += "copies " + " ".join(f"{c:.3f}" for c in r["copy_ratios"])
        lines.append(
            f"{r['variant']:<18}{r['ms_per_step']:>9.2f}{r['ms_median']:>8.2f}{r['ms_p10']:>7.2f}"
            f"{r['ratio_mean']:>11.3f}x"
            f"{r['ratio_median']:>13.3f}x{r['ratio_paired']:>7.3f}x  {notes}"
        )
    floor = results["noise_floor"]
    lines.append(
        f"noise floor (bare's two halves, identical loops): {floor['median']:.3f}x, "
        f"paired {floor['paired']:.3f}x"
    )
    lines.append("targets: probe default <= 1.02x, probe every step <= 1.20x (median step ratio)")
    return "\n".join(lines)


def supervised(args: argparse.Namespace) -> dict[str, Any]:
    """Run this script under ``tuidebug run --detach`` and return what it measured."""
    out = Path(tempfile.mkdtemp()) / "bench.json"
    command = [
        sys.executable, "-m", "tuidebug.cli", "run", "--detach", os.path.abspath(__file__),
        "--rounds", str(args.rounds), "--steps", str(args.steps), "--copies", str(args.copies),
        "--out", str(out),
    ]  # fmt: skip
    if args.only:
        command += ["--only", args.only]
    if args.rotate:
        command.append("--rotate")
    if args.same_models:
        command.append("--same-models")
    started = subprocess.run(command, check=True, capture_output=True, text=True)
    done = threading.Event()
    watcher = None
    if args.watched:
        run_id = started.stdout.split()[2]  # "tuidebug: run <id> started (...)"
        watcher = threading.Thread(target=_watch, args=(run_id, done), daemon=True)
        watcher.start()
    try:
        deadline = time.monotonic() + 1800
        while not out.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the supervised benchmark did not finish")
            time.sleep(0.5)
    finally:
        done.set()
    if watcher is not None:
        watcher.join(5)
    time.sleep(0.2)
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def _watch(run_id: str, done: threading.Event) -> None:
    """Attach a console to the run until ``done``: it reads every message and draws nothing
    (the probe's link then sends at its watched pace, the supervisor fans out to it)."""
    from tuidebug.paths import find_run
    from tuidebug.wire.client import RunConnection

    async def read() -> None:
        paths = find_run(run_id)
        deadline = time.monotonic() + 30
        while paths is None or not paths.socket.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id}: no socket to watch")
            await asyncio.sleep(0.05)
            paths = find_run(run_id)
        connection = await RunConnection.open(paths)
        try:
            async for _batch in connection.batches():
                if done.is_set():
                    break
        finally:
            connection.close()

    asyncio.run(read())


def summary(runs: list[dict[str, Any]]) -> str:
    """The median over runs of each variant's median-step ratio (and paired ratio), with the
    range."""
    lines = [f"median of {len(runs)} runs (median step ratio to bare, range; paired, range):"]
    floors = sorted(run["noise_floor"]["median"] for run in runs)
    lines.append(
        f"  {'(noise floor)':<18}{statistics.median(floors):.3f}x"
        f"  ({floors[0]:.3f}-{floors[-1]:.3f})"
    )
    for i, row in enumerate(runs[0]["rows"]):
        ratios = sorted(run["rows"][i]["ratio_median"] for run in runs)
        paired = sorted(run["rows"][i]["ratio_paired"] for run in runs)
        lines.append(
            f"  {row['variant']:<18}{statistics.median(ratios):.3f}x"
            f"  ({ratios[0]:.3f}-{ratios[-1]:.3f});"
            f"  {statistics.median(paired):.3f}x  ({paired[0]:.3f}-{paired[-1]:.3f})"
        )
    return "\n".join(lines)


def _names(only: str | None) -> list[str] | None:
    return [name.strip() for name in only.split(",")] if only else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--copies", type=int, default=3, help="models per variant, pooled")
    parser.add_argument("--steps", type=int, default=12, help="steps per round")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1, help="runs, then the median of ratios")
    parser.add_argument("--supervised", action="store_true", help="under tuidebug run --detach")
    parser.add_argument(
        "--only", help='variants to run besides "bare", comma-separated (e.g. "probe default")'
    )
    parser.add_argument(
        "--rotate", action="store_true", help="deal the models' tensors out anew each round"
    )
    parser.add_argument(
        "--same-models",
        action="store_true",
        help="copy k of every variant trains the same model k (each variant's hooks on only in "
        "its own rounds): each model's own speed cancels in the paired ratio",
    )
    parser.add_argument(
        "--watched",
        action="store_true",
        help="with --supervised: a console (reading, not drawing) attached for the whole run",
    )
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.watched and not args.supervised:
        parser.error("--watched needs --supervised (a console attaches to a run)")
    if args.rotate and args.same_models:
        parser.error("--rotate deals each variant its own models: not with --same-models")
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, args.repeat)):
        results = (
            supervised(args)
            if args.supervised
            else run(
                args.rounds,
                args.steps,
                args.warmup,
                args.copies,
                _names(args.only),
                args.rotate,
                args.same_models,
            )
        )
        runs.append(results)
        print(report(results), flush=True)
    if len(runs) > 1:
        print(summary(runs))
    if args.out:
        tmp = Path(args.out + ".tmp")
        tmp.write_text(json.dumps(runs[-1]))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
