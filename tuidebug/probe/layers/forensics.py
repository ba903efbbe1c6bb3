"""NaN/Inf forensics: what the sampler keeps and reports once a value went non-finite.

``_freeze`` keeps the batch and the last all-finite weights (``Forensics``, in
``tuidebug.probe.nonfinite``); a non-finite loss starts ``FORENSIC_TRIES`` forensic samples
(``_nonfinite_loss``); ``_report`` sends the :class:`NonFinite` message, first when the value
is seen, again when a sample located where it began.
"""

from __future__ import annotations

from tuidebug.probe.layers.base import _SamplerState, log
from tuidebug.probe.nonfinite import Culprit, Forensics, to_cpu
from tuidebug.wire.layer_messages import NonFinite

FORENSIC_TRIES = 3  # forensic samples after a non-finite value before giving up locating it


class _Forensics(_SamplerState):
    """Keeping and reporting the first non-finite value."""

    # --- internals: non-finite values ----------------------------------------------------------

    def _layer_label(self, layer: int) -> str:
        if layer < 0 or layer >= len(self._layer_names):
            return ""
        model = self._models[self._layer_model[layer]].name
        name = self._layer_names[layer]
        return f"{model}.{name}" if name else model

    def _freeze(self, step: int, source: str) -> Forensics:
        """The first non-finite value: keep the batch and the last finite weights."""
        forensics = Forensics(step=step, source=source)
        try:
            forensics.batch = to_cpu(self._last_inputs)
            if self._last_finite is not None:
                kept_step, tensors, indices = self._last_finite
                forensics.params = {
                    self._param_names[i]: t.to("cpu", copy=t.device.type != "cpu")
                    for i, t in zip(indices, tensors, strict=True)
                }
                forensics.params_step = kept_step
        except Exception:
            log.exception("tuidebug: keeping the forensic data failed")
        self.forensics = forensics
        self._last_finite = None  # kept now; free the device copy
        return forensics

    def _nonfinite_loss(self, step: int, loss: float) -> bool:
        if self.forensics is not None:
            return False
        forensics = self._freeze(step, "loss")
        pause = self.pause_on_nonfinite
        self._send(
            NonFinite(
                rank=self.rank,
                step=step,
                source="loss",
                detail=(
                    f"the loss is {loss}; the next steps are sampled to find where it began"
                    f"{self._replay_note}"
                ),
                paused=pause,
            )
        )
        self._start_forensics(step)
        forensics.detail = f"loss {loss}"
        return pause

    def _start_forensics(self, step: int) -> None:
        self._forensic_left = FORENSIC_TRIES
        if self._sample is None:
            self.schedule.next_step = step + 1

    def _report(self, step: int, culprit: Culprit | None, located: bool) -> bool:
        first = self.forensics is None
        if first:
            self._freeze(step, culprit.source if culprit else "unknown")
        forensics = self.forensics
        assert forensics is not None
        if forensics.located:
            return False
        if culprit is not None:
            forensics.layer = culprit.layer
            forensics.name = self._layer_label(culprit.layer)
            forensics.detail = culprit.detail
            forensics.source = culprit.source
        if located:
            forensics.located = True
            forensics.found_step = step
            self._forensic_left = 0
            self.schedule.after(step)
        elif first:
            self._start_forensics(step)
        pause = first and self.pause_on_nonfinite
        if first or located:
            self._send(
                NonFinite(
                    rank=self.rank,
                    step=forensics.step,
                    source=forensics.source,  # type: ignore[arg-type]
                    layer=forensics.layer,
                    name=forensics.name,
                    detail=forensics.detail,
                    located=located,
                    found_step=step,
                    paused=pause,
                )
            )
        return pause
