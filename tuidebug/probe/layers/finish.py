"""Finishing a sample: from what its hooks collected to its :class:`LayerStats` message.

``_finish`` (at the boundary after the sampled step): the batched outputs measured
(``_flush``), the hooks down, parameter-gradient, weight and update norms into the StatBuffer's
tail, and ONE vector for the host copy (on CUDA without blocking: ``_drain`` reads it once its
event completed). ``_complete``: the host values read back section by section, folded per layer
(``stats._fold_records``), sent as ``LayerStats``; a non-finite value found there is located
and reported (``_report``, in ``forensics.py``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from tuidebug.probe.layers.base import _SamplerState
from tuidebug.probe.layers.stats import BINS, _clamp, _fold_records, _histogram
from tuidebug.probe.nonfinite import Culprit, GradEvent, locate_backward, locate_forward
from tuidebug.wire.layer_messages import Histogram, LayerStats

KEEP_EVERY = 30.0  # seconds between two refreshes of the kept last-finite parameters
TRIP_LAYERS = 16  # layers whose smallest parameter's gradient the tripwire sums every step
_FLOATS_PER_RECORD = 4  # sum, norm, min, max


def host_copy(tensor: torch.Tensor) -> list[float]:
    """THE device-to-host copy of a CPU sample: one per sampled step (tests count calls)."""
    values: list[float] = tensor.tolist()
    return values


class _Finishing(_SamplerState):
    """Reading a sampled step back and sending it (see the module docstring)."""

    # --- internals: finishing a sample ---------------------------------------------------------

    def _finish(self, step: int) -> bool:
        start = time.perf_counter()
        sample = self._sample
        assert sample is not None
        try:
            if sample.deferred:
                self._flush(sample)  # the batched outputs (accelerator)
        finally:
            try:
                # The global forward hook stays while the next step is sampled too (dense
                # sampling): _slow_boundary removes it when no sample follows.
                self._remove_step_hooks(keep_forward=True)
            finally:
                self._sample = None
        params, self._arm_params = self._arm_params, []
        snapshot, self._snapshot = self._snapshot, []
        self._last_slots = sample.slots
        if self._last_rng is not None and self.forensics is None and not self._dense:
            # Did the step draw random numbers since its (last) forward began? The backward
            # and the optimizer draw none, so this is the forward's (see _on_root_call). Not
            # on dense samples: every step is sampled and saves the state anyway, and the
            # first sparse sample looks again.
            self._rng_used = not torch.equal(torch.get_rng_state(), self._last_rng)
        buffer = self._buffer
        with torch.no_grad():
            grads: list[torch.Tensor] = []
            grad_at: list[int] = []
            for k, (_, p) in enumerate(params):
                g = p.grad
                if g is not None and not g.is_sparse:
                    grads.append(g)
                    grad_at.append(k)
            keeping = self.keep_last_finite and time.monotonic() >= self._keep_next
            if not snapshot:
                # No start-of-step copy on this sample (dense sampling): no update ratio; and
                # nothing finite to keep from it either.
                weights: list[torch.Tensor] = []
                deltas: list[torch.Tensor] = []
                keeping = False
            else:
                weights = [p.detach() for _, p in params]
                if keeping:
                    deltas = list(torch._foreach_sub(weights, snapshot))
                    self._snapshot_pool = []  # the snapshot is kept: no longer a reusable buffer
                else:
                    # In place: no second copy of the weights (same norm as w_end - w_start).
                    torch._foreach_sub_(snapshot, weights)
                    deltas = snapshot
            # Weights move slowly: only a sample with the update ratio measures their norms.
            normed = grads + weights + deltas
            # Into the buffer, after the layer statistics (the C kernel on the CPU, else one
            # foreach call: see statbuffer.py).
            norms_in_buffer = buffer is not None and buffer.put_norms(normed)
            hist_params: list[tuple[int, int, str, torch.Tensor]] = []
            if self._hist_layers:
                for k, (i, p) in enumerate(params):
                    if self._param_layer[i] in self._hist_layers:
                        for kind, t in (("weight", p.detach()), ("grad", p.grad)):
                            if t is not None and not t.is_sparse:
                                lo, hi = torch.aminmax(t.detach())
                                hist_params.append((i, k, kind, torch.stack([lo, hi]).float()))
                                hist_params.append((i, k, kind, _histogram(t, lo, hi)))
            # ONE vector for the host copy: [statistics written into the buffer | parameter
            # norms | the rest: statistics computed as 0-d tensors, batched blocks, counts,
            # histograms, forensic gradient checks]. The common sample has no "rest": the
            # vector is a prefix of the buffer. _complete reads it back in this order.
            rest: list[torch.Tensor] = []
            if normed and not norms_in_buffer:
                rest.append(torch.stack([n.float() for n in torch._foreach_norm(normed)]))
            if sample.floats:
                rest.append(torch.stack(sample.floats))
            rest.extend(sample.blocks)
            counted = [t for t in sample.ints if isinstance(t, torch.Tensor)]
            if counted:
                rest.append(torch.stack(counted))
            rest.extend(h for _, _, h in sample.hist)
            rest.extend(t for *_, t in hist_params)
            rest.extend(bad for _, bad in sample.grad_events if bad is not None)
            head = buffer.written() if buffer is not None else None
            if not rest:
                flat = head if head is not None else torch.zeros(0)
            else:
                device = head.device if head is not None else rest[0].device
                parts = ([head] if head is not None else []) + rest
                flat = torch.cat(
                    [t.to(device=device, dtype=torch.float64).reshape(-1) for t in parts]
                )
        keep = (step, snapshot, [i for i, _ in params]) if keeping else None
        shape = (
            4 * len(sample.buf_slots),
            len(normed),
            len(sample.floats),
            sum(b.numel() for b in sample.blocks),
            len(counted),
            len(grads),
        )
        layout = (sample, params, grad_at, shape, hist_params, keep, self.schedule.interval())
        pause = False
        if flat.device.type == "cpu":
            values = host_copy(flat)
            self._cost += time.perf_counter() - start
            pause = self._complete(layout, values, self._cost)
        else:
            host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._cost += time.perf_counter() - start
            self._pending.append((layout, host, event, self._cost))
        self.schedule.note_cost(self._cost)
        self.samples += 1
        if self._forensic_left > 0 and sample.forensic:
            self._forensic_left -= 1
        if self._forensic_left > 0:
            self.schedule.next_step = step + 1
        else:
            self.schedule.after(step)
        return pause

    def _drain(self, wait: bool) -> bool:
        pause = False
        while self._pending and (wait or self._pending[0][2].query()):
            layout, host, event, cost = self._pending.popleft()
            if wait:
                event.synchronize()
            pause |= self._complete(layout, host.tolist(), cost)
        return pause

    def _complete(self, layout: tuple[Any, ...], values: list[float], cost: float) -> bool:
        """Turn one sample's host values into messages; locate non-finite values."""
        sample, params, grad_at, shape, hist_params, keep, interval = layout
        n_buffered, n_norms, n_eager, n_batched, n_counted, n_grads = shape
        # Read the sections back (see _finish). Statistics, indexed by slot: in the buffer
        # (all of them, in slot order, on the common sample), then 0-d ones, then batched.
        cursor = n_buffered + n_norms
        norms = values[n_buffered:cursor]
        if n_buffered == _FLOATS_PER_RECORD * sample.slots:
            floats = values[:n_buffered]
            cursor += n_eager + n_batched
        else:
            floats = [math.nan] * (_FLOATS_PER_RECORD * sample.slots)
            stats = values[:n_buffered] + values[cursor : cursor + n_eager + n_batched]
            cursor += n_eager + n_batched
            for position, slot in enumerate(
                sample.buf_slots + sample.float_slots + sample.block_slots
            ):
                at = position * _FLOATS_PER_RECORD
                floats[slot * _FLOATS_PER_RECORD : (slot + 1) * _FLOATS_PER_RECORD] = stats[
                    at : at + _FLOATS_PER_RECORD
                ]
        for slot, source, top in sample.derived:
            # A ReLU of the output in ``source``: min and max are that output's, clamped.
            at, src = slot * _FLOATS_PER_RECORD, source * _FLOATS_PER_RECORD
            floats[at + 2] = _clamp(floats[src + 2], top)
            floats[at + 3] = _clamp(floats[src + 3], top)
        counted = iter(values[cursor : cursor + n_counted])
        ints = [
            -1.0 if t is None else next(counted) if isinstance(t, torch.Tensor) else t
            for t in sample.ints
        ]
        cursor += n_counted
        order, calls, act, rec_bad, rec_bad_in = _fold_records(sample, floats, ints)
        p_count = len(params)
        grad_norm = [-1.0] * p_count  # -1: no gradient (a NaN norm is a real NaN)
        for j, k in enumerate(grad_at):
            grad_norm[k] = norms[j]
        weight_norm = norms[n_grads : n_grads + p_count] or [-1.0] * p_count  # -1: not measured
        delta_norm = norms[n_grads + p_count : n_grads + 2 * p_count]
        update_ratio = (
            [
                d / w if w > 0 else (0.0 if d == 0 else math.inf)
                for d, w in zip(delta_norm, weight_norm, strict=True)
            ]
            if delta_norm
            else [-1.0] * p_count  # -1: not measured on this sample (dense sampling)
        )
        histograms: list[Histogram] = []
        for layer, slot, _h in sample.hist:
            counts = [int(c) for c in values[cursor : cursor + BINS + 1]]
            cursor += BINS + 1
            lo, hi = floats[slot * 4 + 2], floats[slot * 4 + 3]
            histograms.append(Histogram(layer, "act", -1, lo, hi, counts[:BINS], counts[BINS]))
        for index in range(0, len(hist_params), 2):
            i, _, kind, _ = hist_params[index]
            lo, hi = values[cursor], values[cursor + 1]
            counts = [int(c) for c in values[cursor + 2 : cursor + 2 + BINS + 1]]
            cursor += 2 + BINS + 1
            histograms.append(
                Histogram(self._param_layer[i], kind, i, lo, hi, counts[:BINS], counts[BINS])
            )
        if sample.grad_order:
            self._grad_order = sample.grad_order
        if not self._trip_retargeted and sample.grad_order:
            self._trip_retargeted = True
            last = self._param_layer[sample.grad_order[-1]]
            self._set_trip_layers([last, *sorted(sample.data_fed - {last})][:TRIP_LAYERS])
        events: list[GradEvent] = []
        for event, bad in sample.grad_events:
            if bad is not None:
                event.nonfinite = int(values[cursor])
                cursor += 1
            events.append(event)
        self._send(
            LayerStats(
                rank=self.rank,
                step=sample.step,
                layers=order,
                calls=calls,
                act=act,
                out_shapes=[sample.meta[layer][0] for layer in order],
                in_shapes=[sample.in_shapes.get(layer, "") for layer in order],
                dtypes=[sample.meta[layer][1] for layer in order],
                devices=[sample.meta[layer][2] for layer in order],
                params=[i for i, _ in params],
                grad_norm=grad_norm,
                weight_norm=weight_norm,
                update_ratio=update_ratio,
                histograms=histograms,
                cost=cost,
                interval=interval,
                forensic=sample.forensic,
            )
        )
        # --- non-finite values ---------------------------------------------------------------
        # One sum says "all finite" for the common sample (a NaN or inf makes it non-finite;
        # an overflow only sends it to the exact checks below).
        total = sum(norms)
        forward_bad = any(rec_bad)
        weights_ok = deltas_ok = grads_ok = total - total == 0.0
        if not grads_ok:
            weights_ok = all(math.isfinite(w) for w in weight_norm)
            deltas_ok = all(math.isfinite(d) for d in delta_norm)
            grads_ok = all(math.isfinite(g) for g in norms[:n_grads])
        if sample.scaler_skipped and not forward_bad and weights_ok:
            # The grad scaler skipped the update for these inf gradients (probe/amp.py): the
            # scaler's business, not a NaN to locate; nothing is kept as "last finite".
            return False
        if not forward_bad and weights_ok and deltas_ok and grads_ok:
            if keep is not None:
                self._last_finite = keep
                self._keep_next = time.monotonic() + KEEP_EVERY
            return False
        param_bad: dict[int, bool] = {}
        for k, (i, _) in enumerate(params):
            if not math.isfinite(weight_norm[k] if k < len(weight_norm) else 0.0):
                param_bad[self._param_layer[i]] = True
        culprit: Culprit | None = None
        record_layers = [layer for layer, _, _ in sample.records]
        if forward_bad:
            culprit = locate_forward(
                record_layers, rec_bad, rec_bad_in if sample.forensic else None, param_bad
            )
        if culprit is None and events:
            culprit = locate_backward(events)
        located = culprit is not None and (sample.forensic or culprit.source == "forward")
        if culprit is None and not grads_ok:
            # Not a forensic step: the first parameter whose gradient is non-finite, in
            # backward order, is a hint (its module or a parameterless one after it).
            bad_params = {
                params[grad_at[j]][0]
                for j, g in enumerate(norms[:n_grads])
                if g != g or abs(g) == math.inf
            }
            order = sample.grad_order or self._grad_order
            first = next((i for i in order if i in bad_params), None)
            if first is not None:
                culprit = Culprit(
                    self._param_layer[first],
                    "backward",
                    f"first non-finite parameter gradient in backward order: "
                    f"{self._param_names[first]}",
                )
        return self._report(sample.step, culprit, located)
