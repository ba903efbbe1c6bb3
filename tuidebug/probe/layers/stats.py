"""The statistics' pure functions: histograms on the device, and on the host the reductions
that turn one sample's values into per-layer fields (``_fold_records``: sum, L2 norm, min and
max of each output into mean, std, min, max, zero fraction, non-finite counts).

std is computed from the sum and the L2 norm (``E[x²] - E[x]²`` in float64 on the host): exact
enough for a debugging view, far cheaper than a two-pass std on the device.
"""

from __future__ import annotations

import math

import torch

from tuidebug.probe.layers.base import _Sample

BINS = 32


def _histogram(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """BINS counts over [lo, hi] plus one count of non-finite values, all on x's device.

    ``torch.histc`` wants its range as Python numbers (a host sync) and costs ~550 µs here; this
    bins with a few element-wise ops and ``bincount`` (~70 µs), and takes the range as tensors.
    """
    flat = x.detach().reshape(-1).float()
    lo = lo.float()
    scale = BINS / (hi.float() - lo).clamp_min(1e-30)
    index = ((flat - lo) * scale).clamp_(0, BINS - 1)
    index = torch.nan_to_num_(index, nan=float(BINS))
    return torch.bincount(index.long(), minlength=BINS + 1)[: BINS + 1]


def _nonzeros(d: torch.Tensor, zeros: int | None, count: bool) -> torch.Tensor | float | None:
    """The nonzero count of an output for ``_Sample.ints``: the C kernel's count when it
    measured ``d`` (free: counted in the same read, so on every sample), else a torch count
    where this sample counts (``count``), else None."""
    if zeros is not None:
        return float(d.numel() - zeros)
    return torch.count_nonzero(d) if count else None


def _clamp(value: float, top: float) -> float:
    """``value`` clamped to [0, top] as ReLU (top inf) or ReLU6 (top 6) would; NaN stays."""
    if value != value:
        return value
    return min(max(value, 0.0), top)


_NO_STATS = (math.nan, math.nan, math.nan, math.nan, math.nan, 0.0, -1.0)


def _fold_records(
    sample: _Sample, floats: list[float], ints: list[float]
) -> tuple[list[int], list[int], list[float], list[int], list[int]]:
    """Per layer, in the order forwards finished: (layers, calls, act fields, and per record
    whether its output and its inputs were non-finite). A module called N times aggregates
    its N outputs."""
    records = sample.records
    forensic = sample.forensic
    stale = sample.stale
    per_int = 4 if forensic else 1
    agg: dict[int, list[float]] = {}
    calls: dict[int, int] = {}
    order: list[int] = []
    rec_bad: list[int] = []
    rec_bad_in: list[int] = []
    for layer, slot, numel in records:
        calls[layer] = calls.get(layer, 0) + 1
        if layer not in agg:
            order.append(layer)
            agg[layer] = [0.0, 0.0, math.inf, -math.inf, 0.0, 0.0, 0.0, 0.0]
        if slot < 0 or slot in stale:
            rec_bad.append(0)
            rec_bad_in.append(0)
            continue
        a = agg[layer]
        s, nrm, lo, hi = floats[slot * 4 : slot * 4 + 4]
        ib = slot * per_int
        nonzero = ints[ib]
        if forensic:
            bad = ints[ib + 1]
        else:
            finite = s - s == 0.0 and nrm - nrm == 0.0 and lo - lo == 0.0 and hi - hi == 0.0
            bad = 0.0 if finite else -1.0
        a[0] += s
        a[1] += nrm * nrm
        a[2] = lo if not lo >= a[2] else a[2]  # keeps NaN
        a[3] = hi if not hi <= a[3] else a[3]
        a[4] = math.nan if nonzero < 0 or a[4] != a[4] else a[4] + numel - nonzero
        a[5] = -1.0 if bad < 0 or a[5] < 0 else a[5] + bad
        a[6] += numel
        if forensic:
            a[7] += ints[ib + 2]
            rec_bad_in.append(int(ints[ib + 3]))
        rec_bad.append(1 if bad < 0 else int(bad))
    act: list[float] = []
    for layer in order:
        s, sq, lo, hi, zeros, bad, n, nan_count = agg[layer]
        if n:
            mean = s / n
            var = max(sq / n - mean * mean, 0.0) * (n / (n - 1) if n > 1 else 1.0)
            act += (
                mean,
                math.sqrt(var),
                lo,
                hi,
                zeros / n,
                bad,
                nan_count if forensic else -1,
            )
        else:
            act += _NO_STATS
    return order, [calls[layer] for layer in order], act, rec_bad, rec_bad_in
