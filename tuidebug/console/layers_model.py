"""LayersModel: what the console knows about the run's modules, folded from layer messages.

Plain Python, no Textual (tests feed it messages). The layers screen reads it once per frame:
:meth:`LayersModel.take_changed` hands over the rows that changed since the last call, so the
table updates only those cells, and :attr:`LayersModel.structure_version` changes only when a
model's module tree arrives (the only time rows are added).

Per module it keeps the latest sampled statistics, the last few distinct output shapes (a shape
that changes between samples is flagged) and, for a few statistics (``TRACKED``), a small
:class:`MinMaxHistory`, created on the first value so that 1,000 modules stay cheap.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from tuidebug.console.history import MinMaxHistory
from tuidebug.console.memory_model import DEFAULT_DTYPE_BYTES, DTYPE_BYTES, shape_elements
from tuidebug.wire.layer_messages import (
    ACT_FIELDS,
    Histogram,
    LayerStats,
    LayerTable,
    NonFinite,
)
from tuidebug.wire.messages import Message

__all__ = ["STATS", "TRACKED", "LayerRow", "LayersModel", "ParamRow", "RankedLayers"]

STATS = (
    "mean",
    "std",
    "min",
    "max",
    "zeros",
    "nonfinite",
    "grad_norm",
    "weight_norm",
    "update_ratio",
)
"""Numeric statistics of a row, by name (``LayerRow.stat``)."""

TRACKED = ("std", "mean", "max", "grad_norm", "update_ratio")
"""Statistics with a history per module (the detail view charts one of them)."""

SHAPES_KEPT = 4
HISTORY_CAPACITY = 128
_N_ACT = len(ACT_FIELDS)
_ZEROS = ACT_FIELDS.index("zeros")

# Anomaly thresholds: rules of thumb, meant to draw the eye, not to judge.
DEAD_FRACTION = 0.99  # outputs almost all exactly zero: dead units
EXPLODING = 1e4  # |activation| or gradient norm above this
VANISHING_GRAD = 1e-8  # gradient norm of a trained module below this
UPDATE_HIGH = 1e-2  # ||Δw||/||w|| well above the ~1e-3 rule of thumb
UPDATE_LOW = 1e-6

ANOMALIES = {
    "nonfinite": "NaN/Inf",
    "exploding": f"|value| > {EXPLODING:g}",
    "dead": f"≥{DEAD_FRACTION:.0%} zeros",
    "vanishing": f"grad norm < {VANISHING_GRAD:g}",
    "update": f"update ratio outside {UPDATE_LOW:g}..{UPDATE_HIGH:g}",
    "shape": "output shape changed",
}
"""Anomaly kind -> what it means (the screen's legend)."""


class ParamRow:
    """One parameter tensor: its name, shape, owner and latest norms."""

    __slots__ = ("grad_norm", "index", "layer", "name", "shape", "update_ratio", "weight_norm")

    def __init__(self, index: int, name: str, layer: int, shape: str) -> None:
        self.index = index
        self.name = name
        self.layer = layer
        self.shape = shape
        self.grad_norm = -1.0
        self.weight_norm = -1.0
        self.update_ratio = -1.0


class LayerRow:
    """One module: tree position, latest statistics, shapes, anomalies, histories."""

    __slots__ = (
        "act",
        "act_bytes",
        "calls",
        "depth",
        "device",
        "dtype",
        "grad_norm",
        "histograms",
        "histories",
        "in_shape",
        "index",
        "label",
        "model",
        "name",
        "out_shape",
        "param_indices",
        "params",
        "shape_changed",
        "shapes",
        "step",
        "type",
        "update_ratio",
        "weight_norm",
    )

    def __init__(
        self, index: int, model: str, name: str, type_: str, depth: int, params: int
    ) -> None:
        self.act_bytes = 0
        """Bytes of activations on the last sample: a leaf's outputs (x calls), a block's
        leaves' outputs: what backward keeps, at most, and what checkpointing a block saves."""
        self.index = index
        self.model = model
        self.name = f"{model}.{name}" if name else model
        self.label = name.rsplit(".", 1)[-1] if name else model
        self.type = type_
        self.depth = depth
        self.params = params
        self.param_indices: list[int] = []
        self.act: tuple[float, ...] | None = None
        self.calls = 0
        self.out_shape = ""
        self.in_shape = ""
        self.dtype = ""
        self.device = ""
        self.shapes: deque[str] = deque(maxlen=SHAPES_KEPT)
        self.shape_changed = False
        # -1: not known (no parameters, no gradient yet); NaN and inf are real values.
        self.grad_norm = -1.0
        self.weight_norm = -1.0
        self.update_ratio = -1.0
        self.step = 0
        self.histograms: dict[tuple[str, int], Histogram] = {}
        self.histories: dict[str, MinMaxHistory] = {}

    def stat(self, name: str) -> float:
        """A statistic by name (``STATS``); -1 (norms) or NaN (activations) when not known."""
        if name in ("grad_norm", "weight_norm", "update_ratio"):
            return float(getattr(self, name))
        if self.act is None:
            return math.nan
        return self.act[ACT_FIELDS.index(name)]

    @property
    def nonfinite(self) -> int:
        return int(self.act[5]) if self.act is not None else 0

    def anomalies(self) -> list[str]:
        """Anomaly kinds (keys of ``ANOMALIES``) of the latest sample."""
        out: list[str] = []
        act = self.act
        norms = (self.grad_norm, self.weight_norm, self.update_ratio)
        if (act is not None and act[5] != 0) or not all(math.isfinite(v) for v in norms):
            out.append("nonfinite")
        if (
            act is not None and (abs(act[2]) > EXPLODING or abs(act[3]) > EXPLODING)
        ) or self.grad_norm > EXPLODING:
            out.append("exploding")
        if act is not None and act[4] >= DEAD_FRACTION:
            out.append("dead")
        if self.param_indices and 0 <= self.grad_norm < VANISHING_GRAD and self.calls:
            out.append("vanishing")
        ratio = self.update_ratio
        if ratio >= 0 and math.isfinite(ratio) and not UPDATE_LOW <= ratio <= UPDATE_HIGH:
            out.append("update")
        if self.shape_changed:
            out.append("shape")
        return out


def _combine(values: Iterable[float]) -> float:
    """The L2 norm of several tensors from their norms; -1 (unknown) values are skipped, NaN
    and inf propagate, and -1 comes back when none is known."""
    total = 0.0
    seen = False
    for v in values:
        if v >= 0 or v != v:
            total += v * v
            seen = True
    return math.sqrt(total) if seen else -1.0


class LayersModel:
    """The console's state of the run's modules. See the module docstring."""

    def __init__(self, history_capacity: int = HISTORY_CAPACITY) -> None:
        self.rows: list[LayerRow] = []
        self.params: list[ParamRow] = []
        self.models: list[str] = []
        self.step = 0
        """The step of the latest sample."""
        self.samples = 0
        self.interval = 0
        self.cost = 0.0
        self.nonfinite: NonFinite | None = None
        """The first non-finite report (replaced by the one that locates it)."""
        self.jump_to: int | None = None
        """A row the screen should select (set when a non-finite value is located)."""
        self.version = 0
        self.structure_version = 0
        self._changed: set[int] = set()
        self._history_capacity = history_capacity

    # --- folding -------------------------------------------------------------------------------

    def fold(self, messages: Iterable[Message]) -> None:
        """Fold a batch of messages; kinds that are not about layers are ignored."""
        for message in messages:
            if isinstance(message, LayerStats):
                self._fold_stats(message)
            elif isinstance(message, LayerTable):
                self._fold_table(message)
            elif isinstance(message, NonFinite):
                self._fold_nonfinite(message)

    def _fold_table(self, table: LayerTable) -> None:
        end = table.base + len(table.names)
        while len(self.rows) < end:
            # Placeholders keep indices aligned if tables arrive out of order.
            self.rows.append(LayerRow(len(self.rows), "", "?", "", 0, 0))
        for i, name in enumerate(table.names):
            self.rows[table.base + i] = LayerRow(
                table.base + i,
                table.model,
                name,
                table.types[i],
                table.depths[i],
                table.params[i],
            )
        p_end = table.param_base + len(table.param_names)
        while len(self.params) < p_end:
            self.params.append(ParamRow(len(self.params), "?", -1, ""))
        for i, pname in enumerate(table.param_names):
            index = table.param_base + i
            layer = table.param_layers[i]
            shape = table.param_shapes[i] if i < len(table.param_shapes) else ""
            self.params[index] = ParamRow(index, pname, layer, shape)
            if 0 <= layer < len(self.rows):
                self.rows[layer].param_indices.append(index)
        if table.model not in self.models:
            self.models.append(table.model)
        self.structure_version += 1
        self.version += 1
        self._changed.update(range(table.base, end))

    def _fold_stats(self, stats: LayerStats) -> None:
        rows = self.rows
        step = stats.step
        self.step = step
        self.samples += 1
        self.interval = stats.interval
        self.cost = stats.cost
        act = stats.act
        for k, layer in enumerate(stats.layers):
            if not 0 <= layer < len(rows):
                continue
            row = rows[layer]
            values = act[k * _N_ACT : (k + 1) * _N_ACT]
            previous = row.act
            if values[_ZEROS] != values[_ZEROS] and previous is not None and values[0] == values[0]:
                # Zeros not counted on this sample (dense sampling counts them on one sample
                # in a cycle): the last count stands rather than flickering to "—".
                values = [*values]
                values[_ZEROS] = previous[_ZEROS]
            row.act = tuple(values)
            row.calls = stats.calls[k] if k < len(stats.calls) else 1
            shape = stats.out_shapes[k] if k < len(stats.out_shapes) else ""
            row.shape_changed = bool(row.out_shape) and shape != row.out_shape
            if shape and shape not in row.shapes:
                row.shapes.append(shape)
            elif shape:
                # Most recent last: move a shape seen before to the end.
                row.shapes.remove(shape)
                row.shapes.append(shape)
            row.out_shape = shape
            row.in_shape = stats.in_shapes[k] if k < len(stats.in_shapes) else ""
            row.dtype = stats.dtypes[k] if k < len(stats.dtypes) else ""
            row.device = stats.devices[k] if k < len(stats.devices) else ""
            row.step = step
            self._changed.add(layer)
        self._update_activation_bytes()
        touched: set[int] = set()
        params = self.params
        for k, index in enumerate(stats.params):
            if not 0 <= index < len(params):
                continue
            p = params[index]
            p.grad_norm = stats.grad_norm[k]
            if stats.weight_norm[k] != -1.0:  # -1: not measured on this sample
                p.weight_norm = stats.weight_norm[k]
            ratio = stats.update_ratio[k]
            if ratio != -1.0:  # -1: not measured on this sample; keep the last one
                p.update_ratio = ratio
            touched.add(p.layer)
        for layer in touched:
            if not 0 <= layer < len(rows):
                continue
            row = rows[layer]
            own = [params[i] for i in row.param_indices]
            row.grad_norm = _combine(p.grad_norm for p in own)
            row.weight_norm = _combine(p.weight_norm for p in own)
            # ||Δw|| of each tensor is ratio * ||w||; the module's ratio is their L2 over ||w||.
            delta = _combine(p.update_ratio * p.weight_norm for p in own if p.update_ratio >= 0)
            row.update_ratio = delta / row.weight_norm if row.weight_norm > 0 else delta
            row.step = step
            self._changed.add(layer)
        for h in stats.histograms:
            if 0 <= h.layer < len(rows):
                rows[h.layer].histograms[(h.kind, h.param)] = h
        for layer in self._changed:
            if 0 <= layer < len(rows) and rows[layer].step == step:
                self._track(rows[layer], step)
        self.version += 1

    def _update_activation_bytes(self) -> None:
        """Recompute every row's activation bytes from its output shapes, dtype and calls.

        Rows are in pre-order with depths, so a stack gives each leaf's ancestors (one pass).
        """
        rows = self.rows
        totals = [0] * len(rows)
        stack: list[int] = []
        for i, row in enumerate(rows):
            while stack and rows[stack[-1]].depth >= row.depth:
                stack.pop()
            leaf = i + 1 >= len(rows) or rows[i + 1].depth <= row.depth
            if leaf and row.out_shape:
                size = DTYPE_BYTES.get(row.dtype, DEFAULT_DTYPE_BYTES)
                own = shape_elements(row.out_shape) * size * max(1, row.calls)
                totals[i] += own
                for ancestor in stack:
                    totals[ancestor] += own
            stack.append(i)
        for i, row in enumerate(rows):
            if row.act_bytes != totals[i]:
                row.act_bytes = totals[i]
                self._changed.add(i)

    def _track(self, row: LayerRow, step: int) -> None:
        for name in TRACKED:
            value = row.stat(name)
            if name in ("grad_norm", "update_ratio") and value == -1.0:
                continue  # unknown, not a value
            if row.act is None and name not in ("grad_norm", "update_ratio"):
                continue
            history = row.histories.get(name)
            if history is None:
                history = row.histories[name] = MinMaxHistory(self._history_capacity, 0.0)
            if history.last_step is None or step > history.last_step:
                history.append(step, value)

    def _fold_nonfinite(self, message: NonFinite) -> None:
        if self.nonfinite is None or message.located or message.layer >= 0:
            self.nonfinite = message
        if message.layer >= 0:
            self.jump_to = message.layer
        self.version += 1

    # --- reading -------------------------------------------------------------------------------

    def take_changed(self) -> set[int]:
        """Rows changed since the last call (the table updates only these)."""
        changed, self._changed = self._changed, set()
        return changed

    def row(self, index: int) -> LayerRow | None:
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def params_of(self, index: int) -> list[ParamRow]:
        row = self.row(index)
        return [self.params[i] for i in row.param_indices] if row is not None else []


class RankedLayers:
    """The layers of every rank of a job: one :class:`LayersModel` per rank that sent any.

    A single process has rank 0 only, always present (the screen opens on it before any data).
    ``jump_to`` is the first rank with a layer to jump to (a located NaN/Inf), so the screen
    can switch to that rank.
    """

    def __init__(self) -> None:
        self.by_rank: dict[int, LayersModel] = {0: LayersModel()}
        self.version = 0
        """Bumped when a rank is added (the screen's rank choice changes)."""

    def fold(self, messages: Iterable[Message]) -> None:
        by_rank = self.by_rank
        for message in messages:
            if not isinstance(message, (LayerStats, LayerTable, NonFinite)):
                continue
            model = by_rank.get(message.rank)
            if model is None:
                model = by_rank[message.rank] = LayersModel()
                self.version += 1
            model.fold((message,))

    def ranks(self) -> list[int]:
        """Ranks with layer data (rank 0 first)."""
        return sorted(self.by_rank)

    def model(self, rank: int) -> LayersModel:
        return self.by_rank.get(rank) or self.by_rank[0]

    @property
    def jump_to(self) -> tuple[int, int] | None:
        """(rank, layer) of a located NaN/Inf not yet shown, or None."""
        for rank in self.ranks():
            layer = self.by_rank[rank].jump_to
            if layer is not None:
                return rank, layer
        return None
