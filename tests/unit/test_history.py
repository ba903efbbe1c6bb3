"""MinMaxHistory: fixed memory, spikes kept through merges, NaN counted, rewinds, columns."""

from __future__ import annotations

import itertools
import math

import pytest

from tuidebug.console.history import Column, MinMaxHistory


def test_spike_survives_many_merges() -> None:
    h = MinMaxHistory(capacity=64)
    for step in range(100_000):
        h.append(step, 1000.0 if step == 54_321 else 1.0)
    assert h.bucket_width >= 100_000 // 64
    assert len(h.buckets()) <= 64
    cols = h.downsample(40)
    assert all(c is not None for c in cols)
    maxima = [c.max for c in cols if c is not None]
    assert maxima.count(1000.0) == 1  # shown once, not smeared over columns
    assert max(maxima) == 1000.0
    assert min(c.min for c in cols if c is not None) == 1.0


def test_counts_and_sums_are_exact() -> None:
    h = MinMaxHistory(capacity=16)
    n = 10_000
    h.extend(range(n), [float(i) for i in range(n)])
    buckets = h.buckets()
    assert sum(int(b["count"]) for b in buckets) == n
    assert sum(float(b["sum"]) for b in buckets) == sum(range(n))
    assert buckets[0]["first_step"] == 0 and buckets[-1]["last_step"] == n - 1
    assert buckets[-1]["last"] == n - 1
    assert len(h) == n
    # Buckets tile the steps without overlap.
    for a, b in itertools.pairwise(buckets):
        assert int(a["last_x"]) < int(b["first_x"])


def test_nonfinite_counted_and_kept_out_of_min_max() -> None:
    h = MinMaxHistory(capacity=8)
    values = [1.0, math.nan, 2.0, math.inf, -math.inf, 3.0] * 100
    h.extend(range(len(values)), values)
    assert h.nonfinite_total == 300
    assert sum(int(b["nonfinite"]) for b in h.buckets()) == 300
    assert h.finite_range() == (1.0, 3.0)
    assert sum(h.nonfinite_columns(10)) == 300
    cols = [c for c in h.downsample(10) if c is not None]
    assert all(math.isfinite(c.mean) and 1.0 <= c.min <= c.max <= 3.0 for c in cols)
    assert math.isfinite(h.smoothed_last())
    h.append(600, math.nan)
    assert math.isnan(h.last_value)  # the latest value is reported as it is


def test_all_nan_columns_are_empty_but_flagged() -> None:
    h = MinMaxHistory()
    h.extend(range(5), [math.nan] * 5)
    assert h.downsample(5) == [None] * 5
    assert sum(h.nonfinite_columns(5)) == 5
    assert h.finite_range() is None


def test_steps_backwards_continue_the_x_axis() -> None:
    h = MinMaxHistory()
    h.extend(range(100), [5.0] * 100)
    h.mark(50, "restore")  # announced before the first point of the new branch
    h.extend(range(50, 80), [1.0] * 30)
    assert h.rewinds == 1
    assert h.x_range() == (0, 129)  # nothing overwritten: 100 + 30 points in arrival order
    assert h.step_at(99) == 99
    assert h.step_at(100) == 50
    assert h.step_at(129) == 79
    (marker,) = h.markers
    assert (marker.x, marker.step, marker.label) == (100, 50, "restore")
    cols = h.downsample(130)
    assert cols[99] == Column(5.0, 5.0, 5.0, 5.0)
    assert cols[100] == Column(1.0, 1.0, 1.0, 1.0)
    # The smoothed series restarts with the new branch instead of dragging 5.0 along.
    assert h.smoothed_last() == pytest.approx(1.0)


def test_rewind_without_marker_also_continues() -> None:
    h = MinMaxHistory()
    h.extend([0, 1, 2, 1, 2], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert h.rewinds == 1
    assert [c.last for c in h.downsample(5) if c] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_downsample_columns() -> None:
    h = MinMaxHistory()
    h.extend(range(100), [float(i) for i in range(100)])
    cols = h.downsample(10)
    assert len(cols) == 10
    assert all(c is not None for c in cols)
    assert cols[0] is not None and cols[0].min == 0.0
    assert cols[-1] is not None and cols[-1].max == 99.0
    # Every point lands in exactly one column (buckets narrower than a column are not split).
    total = 0.0
    for c in cols:
        assert c is not None
        assert c.min <= c.mean <= c.max
    total = sum(float(b["sum"]) for b in h.buckets())
    assert total == sum(range(100))
    # A range selects points.
    sub = h.downsample(5, (10, 14))
    assert [c.min for c in sub if c] == [10.0, 11.0, 12.0, 13.0, 14.0]
    # Few points over many columns: each point in one column, gaps between.
    sparse = MinMaxHistory()
    sparse.extend([0, 10, 20], [1.0, 2.0, 3.0])
    cols = sparse.downsample(21)
    assert [i for i, c in enumerate(cols) if c] == [0, 10, 20]


def test_empty_and_single_point() -> None:
    h = MinMaxHistory()
    assert h.downsample(4) == [None] * 4
    assert h.x_range() is None
    h.append(7, 2.0)
    assert h.downsample(3)[0] == Column(2.0, 2.0, 2.0, 2.0)
    assert h.downsample(0) == []


def test_smoothing_is_debiased_ema() -> None:
    h = MinMaxHistory(smoothing=0.5)
    h.extend(range(3), [1.0, 3.0, 3.0])
    # TensorBoard: ema = 0.5 * ema + 0.5 * v, divided by 1 - 0.5**n.
    expected = (0.5 * (0.5 * 0.5 + 1.5) + 1.5) / (1 - 0.125)
    assert h.smoothed_last() == pytest.approx(expected)
    h0 = MinMaxHistory(smoothing=0.0)
    h0.extend(range(3), [1.0, 3.0, 2.0])
    assert [c.mean for c in h0.downsample(3, smoothed=True) if c] == [1.0, 3.0, 2.0]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        MinMaxHistory(capacity=3)
    with pytest.raises(ValueError):
        MinMaxHistory(smoothing=1.0)
