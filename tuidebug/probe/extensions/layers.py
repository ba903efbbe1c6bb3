"""The layer inspector in the probe: a LayerSampler fed by the probe's boundaries.

Options: ``budget`` (fraction of step time, default 0.01), ``stats_every`` (force an interval),
``pause_on_nonfinite`` (default True). Console commands: ``layers-focus`` (args: layer) gives a
layer histograms on every sample; ``layers-sample`` samples the next step now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuidebug.probe.amp import SKIPPED
from tuidebug.probe.layers import LayerSampler
from tuidebug.probe.observer import Observer
from tuidebug.wire.messages import Command, StepPoint

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

NONFINITE_REASON = "first non-finite value (see the layers screen)"


class LayersObserver(Observer):
    """Adapts the LayerSampler to the probe's observer hooks."""

    def __init__(self, sampler: LayerSampler, probe: Probe) -> None:
        self.sampler = sampler
        self.probe = probe

    def on_model(self, name: str, module: Any) -> None:
        from tuidebug.probe.sharding import is_sharded

        if is_sharded([module]):
            # Its parameters are DTensors (FSDP2) or flat shards (FSDP1): a norm or a
            # read-back of one may be a collective, which one rank's sample must never start.
            self.sampler.stop("a sharded model (FSDP/DTensor) is not sampled")
            return
        self.sampler.add_model(name, module)

    def on_optimizer(self, optimizer: Any) -> None:
        self.sampler.add_optimizer(optimizer)

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        # amp_skipped: a step the grad scaler skipped (probe/amp.py), a float set at once
        pause = self.sampler.on_boundary(
            step,
            now,
            point.loss,
            self.probe.boundary_time,
            point.scalars.get(SKIPPED) == 1.0,
        )
        return NONFINITE_REASON if pause else None

    def on_late_value(self, point: StepPoint) -> str | None:
        if point.loss is not None and self.sampler.on_loss(point.step, point.loss):
            return NONFINITE_REASON
        return None

    def close(self) -> None:
        self.sampler.close()


def install(probe: Probe, options: dict[str, Any]) -> None:
    every = options.get("stats_every")
    sampler = LayerSampler(
        probe.send,
        probe.rank,
        budget=float(options.get("budget", 0.01)),
        every=int(every) if every else None,
        pause_on_nonfinite=bool(options.get("pause_on_nonfinite", True)),
        loss_source=probe.current_loss,
        compiled=probe.compiled,
    )
    probe.add_observer(LayersObserver(sampler, probe))

    def focus(command: Command) -> None:
        sampler.focus(int(command.args.get("layer", "-1")))

    probe.gate.add_action("layers-focus", focus)
    probe.gate.add_action("layers-sample", lambda _command: sampler.sample_next())
