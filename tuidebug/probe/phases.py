"""Where a step's time goes: data wait, forward, backward, optimizer step, and the rest.

Timestamps only, taken at points the probe passes anyway plus the fewest new ones:
- data: ``_BaseDataLoaderIter.__next__`` is wrapped while the clock lives (put back on close),
  which covers every DataLoader of the script, single- or multi-process;
- forward: a forward pre-hook and a forward hook on the *root* models only (those the probe
  finds or is given; a global module hook would fire for every module), counted only with
  gradients enabled, so an evaluation's forward is "other";
- backward: the probe's ``torch.autograd.backward`` wrapper, at its entry and its exit;
- optimizer: torch's global optimizer step pre-hook, and the probe's own post-hook;
- the step itself: the probe's boundary (``step_end`` with the clock read the boundary already
  made, ``step_begin`` once the boundary is done: the probe's own work, a pause, a debugger or
  a checkpoint save are no step's time).

Per step that is additions into a four-float list and, every ``interval`` seconds, one
:class:`~tuidebug.wire.phase_messages.StepPhases` message with the sums. Step 1 is not counted
(it holds the script's setup since the probe started, and the model discovery hook).

On CUDA the host clock only sees kernel launches: forward, backward and optimizer are then timed
on one step in ``device_every`` with CUDA events, read at a later boundary once they have
completed (``query()``, never a sync), and the batch's message says ``clock="cuda"``. The data
wait stays a host time: it is the host that waits.

While a profiler capture runs (``probe/extensions/profile.py``) the phases are also marked as
``torch.cuda.nvtx`` ranges on CUDA (for Nsight), and ``record_function`` ranges in the trace.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from tuidebug.probe.observer import Observer
from tuidebug.wire.messages import Message, StepPoint
from tuidebug.wire.phase_messages import StepPhases

log = logging.getLogger("tuidebug.probe")

_clock = time.perf_counter  # the probe's own clock: its boundary's readings are reused here
_grad_enabled = torch.is_grad_enabled
DATA, FORWARD, BACKWARD, OPTIMIZER = range(4)
MAX_DEVICE_PAIRS = 32  # event pairs kept per sampled CUDA step (gradient accumulation)
MAX_DEVICE_PENDING = 8  # sampled CUDA steps waiting for their events; older ones are dropped


class _DeviceStep:
    """The CUDA event pairs of one sampled step, per phase."""

    __slots__ = ("pairs", "step")

    def __init__(self, step: int) -> None:
        self.step = step
        self.pairs: list[tuple[int, Any, Any]] = []

    def done(self) -> bool:
        return all(end.query() for _, _, end in self.pairs)

    def seconds(self) -> list[float]:
        out = [0.0, 0.0, 0.0, 0.0]
        for phase, start, end in self.pairs:
            out[phase] += start.elapsed_time(end) / 1e3
        return out


class PhaseClock(Observer):
    """The step-time breakdown of one probe (see the module docstring)."""

    def __init__(
        self,
        send: Callable[[Message], None],
        rank: int,
        interval: float = 0.5,
        device_every: int = 8,
    ) -> None:
        self._send = send
        self.rank = rank
        self.interval = interval
        self.device_every = max(1, device_every)
        self.acc = [0.0, 0.0, 0.0, 0.0]
        """Seconds per phase of the step running now (the hooks add into it)."""
        self.last: tuple[int, float, float, float, float, float] | None = None
        """The step that just ended: (step, total, data, forward, backward, optimizer)."""
        self.capture: Callable[[int, tuple[float, ...]], None] | None = None
        """Set by a profiler capture: called with each step's figures while it runs."""
        self.marks: Any = None
        """While a capture runs: an object with ``push(name)`` / ``pop()`` marking phases."""
        self.marking = False
        """Whether phases are marked now (a capture, or a CUDA step timed with events): the
        hooks test this one flag and call nothing more on the other steps."""
        self._step_start: float | None = None
        self._forward_from = 0.0
        self._optimizer_from = 0.0
        self._backward_from = 0.0
        self._window = [0.0, 0.0, 0.0, 0.0, 0.0]  # total, data, forward, backward, optimizer
        self._window_first = 0
        self._window_steps = 0
        self._window_longest = 0.0
        self._sent_at = 0.0
        self._roots: dict[int, list[Any]] = {}
        self._optimizer_hook: Any = None
        self._next_patch: tuple[Any, Any] | None = None
        # CUDA: off until a root model's parameters are seen on a CUDA device.
        self._cuda: Any = None
        self._device_step: _DeviceStep | None = None
        self._device_pending: deque[_DeviceStep] = deque()
        self._device_sums = [0.0, 0.0, 0.0, 0.0]
        self._device_steps = 0
        self._device_open: list[Any] = [None, None, None, None]
        self._install()

    # --- hooks -----------------------------------------------------------------------------------

    def _install(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        from torch.utils.data.dataloader import _BaseDataLoaderIter

        original = _BaseDataLoaderIter.__next__
        acc = self.acc
        clock = self

        def timed_next(iterator: Any) -> Any:
            # The only work per batch: two clock reads and an addition.
            started = _clock()
            marks = clock.marks
            if marks is not None:
                marks.push("tuidebug: data")
            try:
                return original(iterator)
            finally:
                acc[DATA] += _clock() - started
                if marks is not None:
                    marks.pop()

        self._next_patch = (original, timed_next)
        _BaseDataLoaderIter.__next__ = timed_next  # type: ignore[method-assign,assignment]
        self._optimizer_hook = register_optimizer_step_pre_hook(self._on_optimizer_pre)

    def _on_optimizer_pre(self, _optimizer: Any, _args: Any, _kwargs: Any) -> None:
        self._optimizer_from = _clock()
        if self.marking:
            self._phase_open(OPTIMIZER, "tuidebug: optimizer")

    def _on_forward_pre(self, _module: Any, _args: Any) -> None:
        if self._forward_from == 0.0 and _grad_enabled():
            self._forward_from = _clock()
            if self.marking:
                self._phase_open(FORWARD, "tuidebug: forward")

    def _on_forward(self, _module: Any, _args: Any, _output: Any) -> None:
        started = self._forward_from
        if started:
            self.acc[FORWARD] += _clock() - started
            self._forward_from = 0.0
            if self.marking:
                self._phase_close(FORWARD)

    # --- called by the probe -----------------------------------------------------------------

    def backward_begin(self, now: float) -> None:
        """``torch.autograd.backward`` starts (``now``: the probe's clock reading)."""
        self._backward_from = now
        if self.marking:
            self._phase_open(BACKWARD, "tuidebug: backward")

    def backward_end(self) -> None:
        """``torch.autograd.backward`` returned (or raised)."""
        started = self._backward_from
        if started:
            self.acc[BACKWARD] += _clock() - started
            self._backward_from = 0.0
            if self.marking:
                self._phase_close(BACKWARD)

    def optimizer_end(self, now: float) -> None:
        """An optimizer's ``step`` returned (``now``: the probe's post-hook clock reading)."""
        started = self._optimizer_from
        if started:
            self.acc[OPTIMIZER] += now - started
            self._optimizer_from = 0.0
            if self.marking:
                self._phase_close(OPTIMIZER)

    def step_end(self, step: int, now: float) -> None:
        """Step ``step`` ended at ``now`` (the boundary's first clock reading): fold it."""
        acc = self.acc
        started = self._step_start
        self._step_start = None
        if started is not None:
            total = now - started
            window = self._window
            if not self._window_steps:
                self._window_first = step
            window[0] += total
            window[1] += acc[0]
            window[2] += acc[1]
            window[3] += acc[2]
            window[4] += acc[3]
            self._window_steps += 1
            if total > self._window_longest:
                self._window_longest = total
            self.last = (step, total, acc[0], acc[1], acc[2], acc[3])
            if self.capture is not None:
                self.capture(step, self.last)
        acc[0] = acc[1] = acc[2] = acc[3] = 0.0
        if self._cuda is not None:
            self._device_boundary(step)
        if now - self._sent_at >= self.interval and self._window_steps:
            self._sent_at = now
            self.flush(step)

    def step_begin(self) -> None:
        """The boundary is done (the probe's work, a pause, a save): the next step starts."""
        self._step_start = _clock()

    def flush(self, step: int) -> None:
        """Send the steps folded since the last message (at most every ``interval``)."""
        if not self._window_steps:
            return
        window = self._window
        message = StepPhases(
            rank=self.rank,
            step=step,
            first=self._window_first,
            steps=self._window_steps,
            total=window[0],
            data=window[1],
            forward=window[2],
            backward=window[3],
            optimizer=window[4],
            longest=self._window_longest,
        )
        if self._device_steps:
            message.clock = "cuda"
            message.device_steps = self._device_steps
            message.forward, message.backward, message.optimizer = self._device_sums[1:]
            self._device_sums = [0.0, 0.0, 0.0, 0.0]
            self._device_steps = 0
        self._window = [0.0, 0.0, 0.0, 0.0, 0.0]
        self._window_steps = 0
        self._window_longest = 0.0
        self._send(message)

    # --- observer hooks ------------------------------------------------------------------------

    def on_model(self, name: str, module: Any) -> None:
        if id(module) in self._roots:
            return
        if getattr(module, "_compiled_call_impl", None) is not None:
            # model.compile(): the module's own hooks run inside its compiled region (dynamo
            # would trace them: graph breaks, a recompile; probe/compiled.py). Its forward time
            # stays in "other". torch.compile(model) comes as its eager wrapper: hooked.
            return
        self._roots[id(module)] = [
            module.register_forward_pre_hook(self._on_forward_pre),
            module.register_forward_hook(self._on_forward),
        ]
        if self._cuda is None:
            param = next(iter(module.parameters()), None)
            if param is not None and param.device.type == "cuda":
                import torch

                self._cuda = torch.cuda

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        return None

    def close(self) -> None:
        """Put ``__next__`` back, remove the hooks, send what is left."""
        from torch.utils.data.dataloader import _BaseDataLoaderIter

        if self._next_patch is not None:
            if _BaseDataLoaderIter.__next__ is self._next_patch[1]:
                _BaseDataLoaderIter.__next__ = self._next_patch[0]  # type: ignore[method-assign]
            self._next_patch = None
        if self._optimizer_hook is not None:
            self._optimizer_hook.remove()
            self._optimizer_hook = None
        for handles in self._roots.values():
            for handle in handles:
                handle.remove()
        self._roots = {}
        if self.last is not None:
            self.flush(self.last[0])

    # --- phase marks: CUDA events on sampled steps, ranges during a capture --------------------

    def _phase_open(self, phase: int, name: str) -> None:
        if self.marks is not None:
            self.marks.push(name)
        if self._device_step is not None and len(self._device_step.pairs) < MAX_DEVICE_PAIRS:
            start = self._cuda.Event(enable_timing=True)
            start.record()
            self._device_open[phase] = start

    def _phase_close(self, phase: int) -> None:
        if self.marks is not None:
            self.marks.pop()
        device_step = self._device_step
        if device_step is not None:
            start = self._device_open[phase]
            if start is not None:
                self._device_open[phase] = None
                end = self._cuda.Event(enable_timing=True)
                end.record()
                device_step.pairs.append((phase, start, end))

    def _device_boundary(self, step: int) -> None:
        """Close the sampled step's events, read those that completed, sample the next step."""
        if self._device_step is not None:
            if self._device_step.pairs:
                self._device_pending.append(self._device_step)
                if len(self._device_pending) > MAX_DEVICE_PENDING:
                    self._device_pending.popleft()
            self._device_step = None
            self._device_open = [None, None, None, None]
        while self._device_pending and self._device_pending[0].done():
            seconds = self._device_pending.popleft().seconds()
            for i in range(1, 4):
                self._device_sums[i] += seconds[i]
            self._device_steps += 1
        if (step + 1) % self.device_every == 0:
            self._device_step = _DeviceStep(step + 1)
        self.set_marking()

    def set_marking(self) -> None:
        """Recompute :attr:`marking` (after a capture starts or ends, at each CUDA boundary)."""
        self.marking = self.marks is not None or self._device_step is not None
