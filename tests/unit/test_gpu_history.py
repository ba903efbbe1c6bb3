"""The panel's bounded memory history and its one-line chart."""

from __future__ import annotations

from tuidebug.gpu.history import BLOCKS, MemoryHistory, decimate, sparkline
from tuidebug.gpu.snapshot import GpuDevice, GpuSnapshot


def _snap(t: float, *used: int | None) -> GpuSnapshot:
    return GpuSnapshot(
        time=t,
        devices=[
            GpuDevice(index=i, memory_used=u, memory_total=100 if u is not None else None)
            for i, u in enumerate(used)
        ],
    )


def test_history_is_bounded_and_per_device() -> None:
    history = MemoryHistory(maxlen=5)
    for t in range(12):
        history.add(_snap(float(t), t, 50))
    assert history.series(0) == [0.07, 0.08, 0.09, 0.10, 0.11]
    assert history.series(1) == [0.5] * 5
    assert history.series(7) == []


def test_same_snapshot_twice_is_recorded_once() -> None:
    history = MemoryHistory()
    snap = _snap(1.0, 10)
    history.add(snap)
    history.add(snap)
    assert history.series(0) == [0.1]


def test_unknown_memory_is_a_gap() -> None:
    history = MemoryHistory()
    history.add(_snap(1.0, 10))
    history.add(_snap(2.0, None))
    history.add(_snap(3.0, 100))
    assert history.series(0) == [0.1, None, 1.0]
    assert sparkline(history.series(0), 3) == "▂ █"


def test_decimation_keeps_the_spike() -> None:
    values: list[float | None] = [0.1] * 1000
    values[537] = 0.99  # the moment before an OOM
    columns = decimate(values, 40)
    assert len(columns) == 40 and max(c for c in columns if c is not None) == 0.99
    assert decimate(values, 0) == []
    assert decimate([0.2, None], 10) == [0.2, None]


def test_sparkline_scale_and_width() -> None:
    assert sparkline([0.0, 0.5, 1.0], 3) == "▁▅█"
    assert sparkline([1.0], 4) == "   █"  # newest on the right
    assert sparkline([], 3) == "   "
    assert set(sparkline([i / 100 for i in range(100)], 20)) <= set(BLOCKS)
    assert len(sparkline([0.3] * 500, 20)) == 20
