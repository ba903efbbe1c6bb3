"""Messages of the step-time feature (issue 18): where a step's time goes, and profiler captures.

- :class:`StepPhases` comes from each rank's probe about twice a second (and once per step when
  steps are slower than that): the steps since the last one, summed per phase. One message per
  half second, not a field on every step point: the history's step rows stay as they are, and
  a fast script pays an addition per phase per step, not an encoding.
- :class:`ProfileStarted` / :class:`ProfileResult`: a ``torch.profiler`` capture asked for with
  ``Command("profile", args={"steps": K})``, and what it found.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tuidebug.wire.messages import Message

__all__ = ["PHASES", "ProfileOp", "ProfileResult", "ProfileStarted", "StepPhases"]

PHASES = ("data", "forward", "backward", "optimizer", "other")
"""The phases of a step, in the order the console stacks them."""


class StepPhases(Message):
    """Steps ``first``..``step`` of a rank: their time in seconds, summed per phase.

    ``data``: in DataLoader iterators' ``__next__``; ``forward``: in calls of the root models
    with gradients enabled; ``backward``: in ``torch.autograd.backward``; ``optimizer``: in
    ``optimizer.step()``; ``total``: boundary to boundary, less the probe's own boundary work
    and any pause; "other" is ``total`` less the four. ``clock`` is "cpu" (a monotonic clock)
    or "cuda": then forward, backward and optimizer are the device's time, measured with CUDA
    events on ``device_steps`` sampled steps of the batch (their mean stands for every step).
    """

    retention: ClassVar[str] = "all"
    bulk: ClassVar[bool] = True

    first: int
    steps: int
    total: float
    data: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0
    longest: float = 0.0  # the slowest step of the batch, boundary to boundary
    clock: str = "cpu"
    device_steps: int = 0

    def per_step(self) -> dict[str, float]:
        """Mean seconds per step of each of :data:`PHASES` ("other" never below zero)."""
        n = max(1, self.steps)
        scale = n / self.device_steps if self.clock == "cuda" and self.device_steps else 1.0
        values = {
            "data": self.data / n,
            "forward": self.forward * scale / n,
            "backward": self.backward * scale / n,
            "optimizer": self.optimizer * scale / n,
        }
        values["other"] = max(0.0, self.total / n - sum(values.values()))
        return values


class ProfileStarted(Message):
    """A capture of the next ``steps`` steps began at the boundary of ``step``."""

    retention: ClassVar[str] = "latest"

    steps: int
    activities: list[str] = msgspec.field(default_factory=list)


class ProfileOp(msgspec.Struct, array_like=True):
    """One operator of a capture's table (times in microseconds, summed over the capture)."""

    name: str
    calls: int
    self_cpu: float
    cpu_total: float
    self_device: float = 0.0
    shapes: str = ""


class ProfileResult(Message):
    """A finished capture: the trace file, the top operators by self time, each step's phases.

    ``step`` is the last step captured, ``first`` the first. ``timeline``: per captured step,
    its seconds per phase (the :data:`PHASES` order) and its total, as the step-time feature
    measured them. ``error`` is set (and the rest may be empty) when the capture failed.
    """

    retention: ClassVar[str] = "latest"

    first: int
    trace: str = ""
    trace_bytes: int = 0
    ops: list[ProfileOp] = msgspec.field(default_factory=list)
    sort: str = "self_cpu"
    timeline: list[list[float]] = msgspec.field(default_factory=list)
    wall: float = 0.0  # seconds from the first captured step's start to the last one's end
    overhead: float = 0.0  # seconds spent stopping the profiler and writing the trace
    error: str = ""


def summarize(batches: list[StepPhases]) -> dict[str, object]:
    """Batches of one rank summed: steps, mean milliseconds per step of each phase (and their
    shares of the step), the slowest step; what ``tuidebug check --json`` reports."""
    steps = sum(b.steps for b in batches)
    if not steps:
        return {"steps": 0}
    ms = dict.fromkeys(PHASES, 0.0)
    for b in batches:
        for name, value in b.per_step().items():
            ms[name] += value * b.steps * 1e3
    step_ms = sum(ms.values())
    return {
        "steps": steps,
        "first": min(b.first for b in batches),
        "last": max(b.step for b in batches),
        "clock": "cuda" if any(b.clock == "cuda" for b in batches) else "cpu",
        "ms_per_step": {name: round(value / steps, 4) for name, value in ms.items()},
        "share": {
            name: round(value / step_ms, 4) if step_ms else 0.0 for name, value in ms.items()
        },
        "largest": max(ms, key=lambda name: ms[name]),
        "longest_ms": round(max(b.longest for b in batches) * 1e3, 3),
    }
