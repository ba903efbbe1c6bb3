"""Measuring outputs: the statistics of one module output, in its hook (``_measure``: into the
sampler's :class:`~tuidebug.probe.statbuffer.StatBuffer`, else as 0-d tensors), or batched at
the step's end for the outputs that waited (``_flush``: one stack and four reductions per group
of equal shapes, the accelerator path).
"""

from __future__ import annotations

from typing import Any

import torch

from tuidebug.probe.layers.base import _Sample, _SamplerState
from tuidebug.probe.layers.stats import _histogram, _nonzeros
from tuidebug.probe.replay import tensors_in

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _Measuring(_SamplerState):
    """The statistics of the outputs a sampled step records (see ``hooks.py``)."""

    def _measure(
        self,
        sample: _Sample,
        layer: int,
        slot: int,
        d: torch.Tensor,
        last: tuple[torch.Tensor, int, int] | None,
        args: Any,
        kwargs: Any,
        count_zeros: bool,
    ) -> None:
        """The statistics of one output, in the hook (grad mode off)."""
        buffer = self._buffer
        if buffer is not None and buffer.holds(d):
            clamp = self._clamp_layers.get(layer)
            if (
                clamp is not None
                and last is not None
                and args
                and args[0] is last[0]
                and last[2] >= 0
                and last[0]._version == last[2]
                and sample.buf_slots
                and sample.buf_slots[-1] == last[1]  # measured here, not deferred
                and not sample.forensic
                and layer not in self._hist_layers
            ):
                # A ReLU of the output just measured: its min and max follow from that
                # output's (clamped on the host, in _complete); one op fewer.
                at = buffer.put_moments(d)
                if at >= 0:
                    sample.buf_slots.append(slot)
                    if buffer.last_zeros is None:  # torch wrote two; the kernel wrote all four
                        sample.derived.append((slot, last[1], clamp))
                    sample.ints.append(_nonzeros(d, buffer.last_zeros, count_zeros))
                    return
            at = buffer.put_stats(d)
        else:
            at = -1
        zeros = None
        if at >= 0:
            assert buffer is not None
            sample.buf_slots.append(slot)
            lo, hi = buffer.views[at + 2], buffer.views[at + 3]
            zeros = buffer.last_zeros
        else:
            if d.dtype in _LOW_PRECISION:
                # Sums of half floats overflow at 65504: accumulate and report in float32.
                total = d.sum(dtype=torch.float32)
                norm = torch.linalg.vector_norm(d, dtype=torch.float32)
                lo, hi = torch.aminmax(d)
                lo, hi = lo.float(), hi.float()
            else:
                total = d.sum()
                norm = torch.linalg.vector_norm(d)
                lo, hi = torch.aminmax(d)
                if d.dtype != torch.float32:
                    total, norm, lo, hi = total.float(), norm.float(), lo.float(), hi.float()
            sample.floats += (total, norm, lo, hi)
            sample.float_slots.append(slot)
        # Ordinary samples tell non-finite values from the sum, norm, min and max (a NaN or
        # an inf shows in them) and count them only on forensic samples: counting costs
        # two more ops a module.
        sample.ints.append(_nonzeros(d, zeros, count_zeros))
        if sample.forensic:
            # x - x is 0 for finite values and NaN for NaN and ±inf: one count of both.
            sample.ints.append(torch.count_nonzero(d - d))
            bad_in = [
                torch.count_nonzero(t - t)
                for t in tensors_in((args, kwargs), [])
                if t.is_floating_point()
            ]
            nan = torch.count_nonzero(d != d)
            zero = torch.zeros((), dtype=nan.dtype, device=nan.device)
            sample.ints += (nan, torch.stack(bad_in).sum().to(nan.device) if bad_in else zero)
        if layer in self._hist_layers:
            sample.hist.append((layer, slot, _histogram(d, lo, hi)))

    def _flush(self, sample: _Sample) -> None:
        """Measure the deferred outputs: per group of equal shape, one stack and 4 reductions.

        Runs at the boundary (or earlier when DEFERRED_NUMEL elements wait). An
        output changed in place since its module returned (``nn.ReLU(inplace=True)`` after a
        Linear) would give the wrong numbers: its version counter tells; it is left out of this
        sample and its layer is measured in the hook from then on.
        """
        deferred, sample.deferred = sample.deferred, []
        sample.deferred_numel = 0
        groups: dict[tuple[Any, ...], list[tuple[int, int, torch.Tensor, int, bool]]] = {}
        for item in deferred:
            _, layer, d, version, _ = item
            if version < 0 or d._version != version:  # < 0: an inference tensor, unknown
                sample.stale.add(item[0])
                self._eager_layers.add(layer)
                continue
            key = (d.shape, d.dtype, d.device)
            group = groups.get(key)
            if group is None:
                groups[key] = [item]
            else:
                group.append(item)
        for (_, dtype, _), items in groups.items():
            tensors = [item[2] for item in items]
            rows = torch.stack(tensors).reshape(len(tensors), -1)
            if dtype in _LOW_PRECISION:
                total = rows.sum(1, dtype=torch.float32)
                norm = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32)
            else:
                total = rows.sum(1)
                norm = torch.linalg.vector_norm(rows, dim=1)
            lo, hi = rows.amin(1), rows.amax(1)
            if lo.dtype != total.dtype:
                lo, hi = lo.to(total.dtype), hi.to(total.dtype)
            sample.blocks.append(torch.stack((total, norm, lo, hi), 1))
            for slot, _, d, _, count_zeros in items:
                sample.block_slots.append(slot)
                if count_zeros:
                    sample.ints[slot] = torch.count_nonzero(d)
