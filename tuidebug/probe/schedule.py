"""When to sample: a cadence set by a cost budget, measured rather than guessed.

The sampler reports how long each of its samples cost the training thread and how long the
unsampled steps take, and what the probe costs on every step whether sampled or not (the
tripwire's check, the root model's pre-hook, the probe's own step boundary: the budget is the
whole probe's, not the sampler's alone): the interval is the smallest N such that one sample
every N steps plus that per-step cost stay within ``budget`` of the training time:
``N = ceil(cost / (budget * step_time - per_step))`` (at least a quarter of the budget is left
for samples, so a per-step cost over budget makes samples rare, not impossible). The costs are
exponential moving averages and the step time a median of recent steps, so one slow step (a
checkpoint, an evaluation) does not swing the cadence. ``every`` forces a fixed interval instead.

Pure Python and cheap: the training thread calls :meth:`due` at every boundary.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

__all__ = ["Schedule"]

_EMA = 0.2  # weight of a new measurement in the moving averages
RECENT = 31  # unsampled step durations the step time is the median of
WARMUP_STEPS = 3  # unsampled steps to time before the first sample (the first step is slow)


class Schedule:
    """The sampling cadence of one sampler.

    Args:
        budget: Fraction of the training time the sampler may use (0.01 = 1%).
        every: Force one sample every ``every`` steps (the budget is then ignored).
        max_interval: Never wait more than this many steps between samples, so a slow model
            still shows fresh statistics now and then.
    """

    __slots__ = (
        "_cost",
        "_per_step",
        "_recent",
        "_step_time",
        "_timed",
        "budget",
        "every",
        "max_interval",
        "next_step",
    )

    def __init__(
        self, budget: float = 0.01, every: int | None = None, max_interval: int = 10_000
    ) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1, not {every}")
        if not budget > 0:
            raise ValueError(f"budget must be > 0, not {budget}")
        self.budget = budget
        self.every = every
        self.max_interval = max_interval
        self._cost: float | None = None
        self._per_step = 0.0  # seconds the probe costs every step (moving average)
        self._step_time: float | None = None
        self._timed = 0
        self._recent: deque[float] = deque(maxlen=RECENT)
        self.next_step = 0
        """The next step to sample (the sampler compares against this at every boundary)."""

    def note_step(self, seconds: float, per_step: float = 0.0) -> None:
        """An unsampled step took ``seconds``, of which the probe's every-step work took
        ``per_step`` (sampled steps are not noted: they include the sample's own cost)."""
        if seconds <= 0 or not math.isfinite(seconds):
            return
        if 0 <= per_step < seconds:
            self._per_step += _EMA * (per_step - self._per_step)
        # Only appended here (this runs at every boundary); the median is taken when the
        # interval is computed. A median, because a pause between steps (evaluation, a
        # checkpoint, the debugger) is not a step and must not make steps look slow.
        self._timed += 1
        self._recent.append(seconds)
        self._step_time = None

    def note_cost(self, seconds: float) -> None:
        """A sample cost the training thread ``seconds``."""
        if seconds < 0 or not math.isfinite(seconds):
            return
        self._cost = seconds if self._cost is None else self._cost + _EMA * (seconds - self._cost)

    @property
    def cost(self) -> float | None:
        return self._cost

    @property
    def per_step(self) -> float:
        """Seconds the probe costs on every step, sampled or not (moving average)."""
        return self._per_step

    @property
    def step_time(self) -> float | None:
        """The median of the recent unsampled step durations."""
        if self._step_time is None and self._recent:
            self._step_time = statistics.median(self._recent)
        return self._step_time

    def interval(self) -> int:
        """Steps from one sample to the next."""
        if self.every is not None:
            return self.every
        step_time = self.step_time
        if self._cost is None or step_time is None:
            return WARMUP_STEPS
        allowed = self.budget * step_time
        n = math.ceil(self._cost / max(allowed - self._per_step, 0.25 * allowed))
        return max(1, min(self.max_interval, n))

    def first(self, step: int) -> int:
        """Plan the first sample after ``step`` (the last step that ended)."""
        if self.every is not None:
            self.next_step = step + 1
        else:
            # Time a few ordinary steps first: the interval needs a step time.
            self.next_step = step + 1 + max(0, WARMUP_STEPS - self._timed)
        return self.next_step

    def after(self, sampled: int) -> int:
        """Plan the next sample after the sample of step ``sampled``."""
        self.next_step = sampled + self.interval()
        return self.next_step
