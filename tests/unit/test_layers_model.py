"""LayersModel: folding tables and samples, shapes kept, anomalies, per-module norms, histories."""

from __future__ import annotations

import math

import pytest

from tuidebug.console.layers_model import LayersModel
from tuidebug.wire.layer_messages import Histogram, LayerStats, LayerTable, NonFinite
from tuidebug.wire.messages import Steps


def _table() -> LayerTable:
    return LayerTable(
        model="net",
        base=0,
        names=["", "fc", "act"],
        types=["Sequential", "Linear", "ReLU"],
        depths=[0, 1, 1],
        params=[20, 20, 0],
        param_names=["fc.weight", "fc.bias"],
        param_layers=[1, 1],
        param_shapes=["4×4", "4"],
    )


def _stats(step: int, shape: str = "8×4", act_zeros: float = 0.5, bad: float = 0) -> LayerStats:
    row = [0.1, 1.0, -1.0, 2.0, 0.0, 0.0, -1.0]
    relu = [0.3, 0.5, 0.0, 2.0, act_zeros, bad, -1.0]
    return LayerStats(
        step=step,
        layers=[1, 2, 0],
        calls=[1, 1, 1],
        act=row + relu + relu,
        out_shapes=[shape] * 3,
        in_shapes=["(8×4)"] * 3,
        dtypes=["float32"] * 3,
        devices=["cpu"] * 3,
        params=[0, 1],
        grad_norm=[3.0, -1.0],
        weight_norm=[3.0, 4.0],
        update_ratio=[1e-3, 2e-3],
        histograms=[Histogram(1, "act", -1, -1.0, 2.0, [1] * 32)],
        interval=10,
        cost=0.001,
    )


def test_fold_table_and_stats() -> None:
    model = LayersModel()
    model.fold([Steps(points=[]), _table()])  # other kinds are ignored
    assert [r.name for r in model.rows] == ["net", "net.fc", "net.act"]
    assert model.rows[1].param_indices == [0, 1]
    assert model.take_changed() == {0, 1, 2}
    model.fold([_stats(10)])
    assert model.take_changed() == {0, 1, 2}
    fc = model.rows[1]
    assert fc.act is not None and fc.act[0] == 0.1
    assert fc.grad_norm == 3.0  # bias had no gradient (-1): skipped
    assert fc.weight_norm == pytest.approx(5.0)
    # ||Δw|| per tensor = ratio * ||w|| -> sqrt(0.003² + 0.008²) / 5
    assert fc.update_ratio == pytest.approx(math.hypot(3e-3, 8e-3) / 5.0)
    assert fc.histograms[("act", -1)].counts == [1] * 32
    assert model.rows[2].histories["std"].last_value == 0.5
    assert "grad_norm" not in model.rows[2].histories  # no parameters: no gradient history
    assert model.interval == 10 and model.step == 10


def test_zeros_not_counted_on_a_sample_keep_the_last_count() -> None:
    """Dense sampling counts exact zeros on one sample in a cycle; the samples between send
    NaN ("not counted"), which must not blank the column."""
    model = LayersModel()
    model.fold([_table(), _stats(10, act_zeros=0.25)])
    model.fold([_stats(11, act_zeros=math.nan)])
    relu = model.rows[2]
    assert relu.stat("zeros") == 0.25 and relu.step == 11
    model.fold([_stats(12, act_zeros=0.75)])
    assert relu.stat("zeros") == 0.75


def test_shapes_and_anomalies() -> None:
    model = LayersModel()
    model.fold([_table(), _stats(1), _stats(2, shape="3×4")])
    act = model.rows[2]
    assert act.shape_changed and list(act.shapes) == ["8×4", "3×4"]
    assert "shape" in act.anomalies()
    model.fold([_stats(3, shape="8×4", act_zeros=1.0)])
    assert list(act.shapes) == ["3×4", "8×4"]  # most recent last, no duplicates
    assert "dead" in act.anomalies() and "nonfinite" not in act.anomalies()
    model.fold([_stats(4, bad=-1)])
    assert "nonfinite" in act.anomalies()
    model.fold([NonFinite(step=4, source="forward", layer=2, name="net.act", located=True)])
    assert model.jump_to == 2 and model.nonfinite is not None and model.nonfinite.located
    assert model.rows[2].histories["std"].total == 4


def test_activation_bytes_per_layer_by_hand() -> None:
    """fc and act each output 8x4 float32 (128 B); act runs twice (256 B); the block holds both
    leaves' outputs (384 B): what backward keeps, at most, and what checkpointing it saves."""
    model = LayersModel()
    model.fold([_table()])
    stats = _stats(10)
    stats.calls = [1, 2, 1]
    model.fold([stats])
    assert [r.act_bytes for r in model.rows] == [8 * 4 * 4 * 1 + 8 * 4 * 4 * 2, 128, 256]
    half = _stats(20, shape="8×4")
    half.dtypes = ["bfloat16"] * 3
    model.fold([half])
    assert [r.act_bytes for r in model.rows] == [64 + 64, 64, 64]
