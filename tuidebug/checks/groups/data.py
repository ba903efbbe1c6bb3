"""Rules on what the model is fed: non-finite inputs, the same batch again, a slow DataLoader."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data.dataloader import _BaseDataLoaderIter

from tuidebug.checks.groups.base import Engine, Forward, RuleGroup, input_tensors
from tuidebug.probe import runtime
from tuidebug.probe.phases import PhaseClock


class DataRules(RuleGroup):
    """Root-model inputs read at each forward of a window. The data wait of a window's step
    comes from the probe's step-time breakdown (``probe/phases.py``, which times ``__next__``
    of DataLoader iterators on every step); without it (``phases`` off, or no live probe),
    ``__next__`` is timed here during windows. Not with ``--overfit-batch``, whose replay does
    not wait."""

    rules = ("nonfinite-input", "same-batch", "data-bottleneck")

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._next_patched: Any = None
        self._data_time = 0.0
        self._data_windows: list[float] = []
        self._fingerprints: list[tuple[Any, ...]] = []
        self._same_count = 0

    def on_window_open(self, step: int, models: dict[str, nn.Module]) -> None:
        self._data_time = 0.0
        self._patch_data_next()

    def on_forward(self, record: Forward, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        name = record.model
        tensors = input_tensors(args, kwargs)
        floats = [t for t in tensors[:4] if t.is_floating_point() and t.numel()]
        if floats:
            finite = torch.stack([torch.isfinite(t).all() for t in floats])
            if not bool(finite.all()):
                bad = floats[int((~finite).nonzero()[0])]
                count = int((~torch.isfinite(bad)).sum())
                self.alert(
                    "nonfinite-input",
                    f"{count} of {bad.numel()} input values of {name} are NaN/Inf "
                    f"at step {self.engine.window_step}",
                    place=name,
                    evidence=f"input shape {tuple(bad.shape)}",
                )
        if tensors and tensors[0].numel():
            first = tensors[0].detach()
            flat = first.reshape(-1)[:4096].float()
            weights = torch.arange(1, flat.numel() + 1, device=flat.device)
            sums = torch.stack([flat.sum(), (flat * weights).sum()]).tolist()
            if all(math.isfinite(v) for v in sums):  # NaN never equals itself
                record.fingerprint = (
                    tuple(first.shape),
                    round(sums[0], 5),
                    round(sums[1], 3),
                )

    def on_disarm(self) -> None:
        if self._next_patched is not None:
            if _BaseDataLoaderIter.__next__ is self._next_patched[1]:
                _BaseDataLoaderIter.__next__ = self._next_patched[0]  # type: ignore[method-assign]
            self._next_patched = None

    def on_forwards(self, forwards: list[Forward], final: bool) -> None:
        train_prints = [r.fingerprint for r in forwards if r.got_grad and r.fingerprint is not None]
        if train_prints and not self.engine.overfit_batch:
            current = train_prints[0]
            if self._fingerprints and self._fingerprints[-1] == current:
                self._same_count += 1
            else:
                self._same_count = 0
            self._fingerprints = [current]
            if self._same_count >= 2:
                self.alert(
                    "same-batch",
                    f"the model got the same input batch in {self._same_count + 1} sampled "
                    f"steps in a row (up to step {self.engine.window_step})",
                    evidence=f"input shape {current[0]}, checksum {current[1]}",
                )

    def on_window_close(self, step: int, elapsed: float) -> None:
        self._check_data(elapsed)

    def _patch_data_next(self) -> None:
        if self._next_patched is not None or self.engine.overfit_batch or _phase_clock():
            return
        original = _BaseDataLoaderIter.__next__
        group = self

        def timed_next(it: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(it)
            finally:
                group._data_time += time.perf_counter() - started

        self._next_patched = (original, timed_next)
        _BaseDataLoaderIter.__next__ = timed_next  # type: ignore[method-assign,assignment]

    def _check_data(self, elapsed: float) -> None:
        if self.engine.window_step < 3 or self.engine.overfit_batch:
            return
        clock = _phase_clock()
        data_time = self._data_time
        if clock is not None:
            # The breakdown has folded the step that just ended (before the observers ran):
            # its total leaves out the probe's own boundary work, a pause or a save.
            last = clock.last
            if last is None or last[0] != self.engine.window_step:
                return
            elapsed, data_time = last[1], last[2]
        if elapsed <= 0:
            return
        share = data_time / elapsed
        self._data_windows.append(share)
        threshold = self.config.option("data-bottleneck", "share", 0.5)
        recent = self._data_windows[-2:]
        if len(recent) == 2 and min(recent) > threshold:
            self.alert(
                "data-bottleneck",
                f"the step waited on the DataLoader for {share:.0%} of its time "
                f"(step {self.engine.window_step})",
                evidence=f"data wait {data_time * 1e3:.1f} ms of a "
                f"{elapsed * 1e3:.1f} ms step; last samples "
                + ", ".join(f"{s:.0%}" for s in recent),
            )


def _phase_clock() -> PhaseClock | None:
    """The live probe's step-time breakdown, when there is one."""
    probe = runtime.current()
    return getattr(probe, "phases", None)
