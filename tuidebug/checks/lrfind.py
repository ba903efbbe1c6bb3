"""The learning-rate range test, run inside the training loop and undone after it.

At a step boundary the finder copies the state of every model, optimizer and LR scheduler it
knows; for the next ``steps`` optimizer steps it sets the learning rate just before each
``optimizer.step()`` (an optimizer step pre-hook, so the script's scheduler cannot overwrite
it), growing exponentially from ``start`` to ``end``, and records the loss of each step. It
stops early once the loss diverges, then loads the copies back: the weights, the optimizer's
moments and learning rates, BatchNorm statistics and the scheduler are exactly as before the
test. What is not undone: the batches the test consumed (the data loader has moved on) and the
random number generators.

The suggested rate is where the smoothed loss falls fastest (the steepest negative slope against
log(lr)), the usual heuristic of fastai's finder.
"""

from __future__ import annotations

import gc
import logging
import math
from typing import TYPE_CHECKING, Any

from tuidebug.probe.observer import Observer
from tuidebug.wire.check_messages import LrFindResult
from tuidebug.wire.messages import Notice, StepPoint

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")


def suggest(lrs: list[float], losses: list[float]) -> float | None:
    """The rate of steepest descent of the (already smoothed) loss, or None if too short."""
    points = [(math.log10(lr), loss) for lr, loss in zip(lrs, losses, strict=False)]
    points = [(x, y) for x, y in points if math.isfinite(y)]
    if len(points) < 5:
        return None
    skip = max(1, len(points) // 10)
    best, best_slope = None, 0.0
    for i in range(skip, len(points) - skip):
        (x0, y0), (x1, y1) = points[i - 1], points[i + 1]
        slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
        if slope < best_slope:
            best, best_slope = i, slope
    if best is None:
        return None
    return float(10 ** points[best][0])


def smooth(values: list[float], beta: float = 0.7) -> list[float]:
    """Debiased exponential moving average (as fastai does)."""
    out, avg = [], 0.0
    for i, value in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta**i))
    return out


class LrFinder(Observer):
    """Runs a range test when asked (``request``), on the live run's own loop."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._models: list[Any] = []
        self._pending: dict[str, Any] | None = None
        self._running = False
        self._snapshots: list[tuple[Any, Any]] = []
        self._handles: list[Any] = []
        self._lrs: list[float] = []
        self._losses: list[float] = []
        self._index = 0
        self._steps = 100
        self._start = 1e-7
        self._end = 10.0
        self._exit = False
        self._base: list[list[float]] = []

    def on_model(self, name: str, module: Any) -> None:
        self._models.append(module)

    def request(self, args: dict[str, Any]) -> None:
        """Start a range test at the next boundary (args: steps, start, end, exit)."""
        if self._running:
            return
        self._pending = args

    def current_lr(self) -> float:
        fraction = self._index / max(1, self._steps - 1)
        return float(self._start * (self._end / self._start) ** fraction)

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        if self._pending is None and not self._running:
            return None  # the whole cost on ordinary steps
        try:
            if self._pending is not None and not self._running:
                self._begin(self._pending)
                self._pending = None
                return None
            if self._running:
                self._record(point)
        except Exception as error:
            log.warning("tuidebug: the LR finder stopped: %r", error)
            self._finish(note=f"stopped by an error: {error!r}")
        if self._exit and not self._running and self._pending is None:
            self._exit = False
            raise SystemExit(0)
        return None

    # --- the test ------------------------------------------------------------------------------

    def _notice(self, text: str, level: str = "warning") -> None:
        self._probe.send(
            Notice(rank=self._probe.rank, step=self._probe.step, level=level, text=text)
        )

    def _begin(self, args: dict[str, Any]) -> None:
        import copy

        self._exit = bool(args.get("exit"))
        optimizers = self._probe.optimizers()
        if not optimizers or not self._models:
            self._notice("lr-find needs a model and a torch.optim optimizer; none seen yet")
            self._send(note="no optimizer to test")
            return
        self._steps = max(5, int(float(args.get("steps", 100))))
        self._start = float(args.get("start", 1e-7))
        self._end = float(args.get("end", 10.0))
        schedulers = _schedulers_of(optimizers)
        snapshots: list[tuple[Any, Any]] = []
        for model in self._models:
            snapshots.append(
                (model, {k: v.detach().clone() for k, v in model.state_dict().items()})
            )
        for opt in [*optimizers, *schedulers]:
            snapshots.append((opt, copy.deepcopy(opt.state_dict())))
        self._snapshots = snapshots
        self._base = [[float(g["lr"]) for g in opt.param_groups] for opt in optimizers]
        self._lrs, self._losses, self._index = [], [], 0
        for opt, base in zip(optimizers, self._base, strict=True):
            self._handles.append(opt.register_step_pre_hook(self._set_lr(base)))
        self._running = True
        self._notice(
            f"lr-find: {self._steps} steps from {self._start:.0e} to {self._end:.0e}; the state "
            "is restored afterwards",
            level="info",
        )

    def _set_lr(self, base: list[float]) -> Any:
        def hook(optimizer: Any, _args: Any, _kwargs: Any) -> None:
            lr = self.current_lr()
            first = base[0] if base and base[0] > 0 else 1.0
            for group, group_base in zip(optimizer.param_groups, base, strict=False):
                group["lr"] = lr * (group_base / first if base[0] > 0 else 1.0)

        return hook

    def _record(self, point: StepPoint) -> None:
        # This boundary's loss was computed before the update made with the previous rate.
        if point.loss is not None:
            self._losses.append(float(point.loss))
            self._lrs.append(self.current_lr())
        self._index += 1
        smoothed = smooth(self._losses)
        best = min(smoothed) if smoothed else math.inf
        diverged = bool(smoothed) and (
            not math.isfinite(smoothed[-1]) or (len(smoothed) > 5 and smoothed[-1] > 4 * best)
        )
        if self._index >= self._steps or diverged:
            self._finish(note="stopped early: the loss diverged" if diverged else "")

    def _finish(self, note: str = "") -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        restored = True
        for obj, state in self._snapshots:
            try:
                obj.load_state_dict(state)
            except Exception as error:
                restored = False
                log.warning("tuidebug: lr-find could not restore %s: %r", type(obj).__name__, error)
        self._snapshots = []
        self._running = False
        self._send(note=note, restored=restored)

    def _send(self, note: str = "", restored: bool = True) -> None:
        # Pair each rate with the loss measured after the update it made.
        lrs, losses = self._lrs[:-1], self._losses[1:]
        smoothed = smooth(losses)
        self._probe.send(
            LrFindResult(
                rank=self._probe.rank,
                step=self._probe.step,
                lrs=lrs,
                losses=smoothed,
                suggested=suggest(lrs, smoothed),
                restored=restored,
                note=note,
            )
        )

    def close(self) -> None:
        if self._running:
            self._finish(note="the script ended during the test")


def _schedulers_of(optimizers: list[Any]) -> list[Any]:
    """The LR schedulers that drive these optimizers (found once, when a test starts)."""
    import torch

    base: Any = getattr(torch.optim.lr_scheduler, "LRScheduler", None) or getattr(
        torch.optim.lr_scheduler, "_LRScheduler", object
    )
    wanted = {id(o) for o in optimizers}
    found = []
    for opt in optimizers:
        for ref in gc.get_referrers(opt):
            if isinstance(ref, dict):
                for owner in gc.get_referrers(ref):
                    if isinstance(owner, base) and id(getattr(owner, "optimizer", None)) in wanted:
                        found.append(owner)
            elif isinstance(ref, base):
                found.append(ref)
    unique = {id(s): s for s in found}
    return list(unique.values())
