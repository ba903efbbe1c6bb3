"""Rules on the data set itself, read from sampled input rows: the same rows in training and
evaluation batches, heavy duplicate rows, a constant feature or channel, large outliers.

Nothing of the data is kept: per row a 64-bit hash of its bits (integer arithmetic on the
row's own device, exact, so a row hashes the same in any batch, at any position, on any
device), and per feature a few numbers of each sampled batch (min, max, quartiles, the 5th and
95th percentiles).

When:
- Training rows: in windows (``on_forward``, sampled steps), up to ``HASH_ROWS`` rows of the
  first input tensor of each root-model forward, and per-feature numbers from a slice of at
  most ``STAT_ELEMENTS`` values (``QUANTILE_VALUES`` per feature for the quartiles).
- Evaluation rows: in windows too, and outside them (``on_eval_forward``: forwards that start
  with grad off or in eval mode) at most ``EVAL_FORWARDS`` forwards a step, only for a model
  that has trained rows to compare them with, and only until the rule has fired.
- Judged when settled (``on_settled``), in the order the forwards ran: one a backward reached is
  training, the others evaluation (``Forward.kind``). An evaluation is compared with the rows
  trained *before* it, so rows scored under ``no_grad`` and trained on afterwards (an RL
  rollout, pseudo-labels) are no leak.

What is a row, a feature: dim 0 is the batch. A feature is a column of a 2-D input, a channel
(dim 1) of a 4-D or 5-D input, and of a 3-D input the last dim (B, T, F), or dim 1 when the
model's first layer is a convolution (B, C, L). Integer and bool inputs (token ids, masks) are
hashed, never measured as features. With ``--overfit-batch`` (one batch replayed) the group
stays quiet: what it sees is no sample of the data.

False alarms it is built to avoid (tests/checks/test_dataset_rules.py): one-hot and sparse
columns, or an image's background flattened into columns (a constant column whose value is
common in the other columns, ``COMMON_VALUE``, is not reported); zero padding at either end of
a wide feature axis; rare 0/1 flags and columns whose quartiles coincide (no spread to measure
an outlier against); a single-row evaluation (autoregressive generation reproduces training
windows); an evaluation given the very tensor the last training forward got
(``Forward.rerun``: a training-accuracy metric on the batch just trained, the probe's own
replay of a step whose loss went NaN).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tuidebug.checks.groups.base import Engine, Forward, RuleGroup, _fmt, input_tensors

HASH_ROWS = 64  # rows hashed per forward (spread over the batch)
HASH_COLS = 1024  # values hashed per row (spread over the row when it is longer)
STAT_ELEMENTS = 32768  # input values read for the per-feature numbers of one batch
QUANTILE_VALUES = 512  # values per feature sorted for the quartiles
EVAL_FORWARDS = 8  # evaluation forwards hashed per step outside windows
MAX_TRAINED = 100_000  # training-row hashes kept per model (~6 MB)
MAX_WINDOWS = 32  # per-batch medians and spreads kept per feature set
COMMON_VALUE = 0.25  # a constant whose value is this common elsewhere is a fill value
PADDING_WIDTH = 64  # zero runs at the ends of a feature axis this wide are padding
_MASK32 = 0xFFFFFFFF
_SPREAD = 1.349  # interquartile range of a standard normal: IQR / 1.349 estimates the std
_BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
_multipliers: dict[torch.device, torch.Tensor] = {}


def _multipliers_on(device: torch.device) -> torch.Tensor:
    """Two fixed rows of odd 31-bit multipliers (one per hashed position), on ``device``."""
    found = _multipliers.get(device)
    if found is None:
        generator = torch.Generator().manual_seed(0x7D5E)
        values = torch.randint(0, 2**30, (2, HASH_COLS), generator=generator) * 2 + 1
        found = _multipliers[device] = values.to(device)
    return found


def row_hashes(x: torch.Tensor) -> list[int]:
    """A 64-bit hash of each of up to ``HASH_ROWS`` rows of ``x`` (dim 0), spread over the
    batch. Exact: a row's bits, folded to 32 bits per value, multiplied by a per-position
    constant and summed as integers (no overflow, no rounding: the same row gives the same
    hash in any batch). An all-zero row hashes to 0. Complex tensors: no hashes."""
    if x.is_complex() or x.shape[0] == 0:
        return []
    n = x.shape[0]
    rows = x.detach()[:: -(-n // HASH_ROWS)]
    flat = rows.reshape(rows.shape[0], -1)
    width = flat.shape[1]
    if width == 0:
        return []
    if width > HASH_COLS:
        flat = flat[:, :: -(-width // HASH_COLS)]
    bits = flat.view(_BITS[flat.dtype]) if flat.dtype in _BITS else flat
    value = bits.to(torch.int64)
    value = (value ^ (value >> 32)) & _MASK32  # < 2**32: each product below is < 2**63
    mult = _multipliers_on(value.device)[:, : value.shape[1]]
    first = ((value * mult[0]) & _MASK32).sum(dim=1)  # < 2**44 for 1024 values
    second = ((value * mult[1]) & _MASK32).sum(dim=1)
    return [int(h) for h in (first ^ (second << 19)).tolist()]


@dataclass
class BatchStats:
    """Per-feature numbers of one batch's slice (CPU, float64), never its values."""

    rows: int
    low: torch.Tensor
    high: torch.Tensor
    quartiles: torch.Tensor  # (3, F): first quartile, median, third quartile
    tails: torch.Tensor  # (2, F): 5th and 95th percentiles
    binary: torch.Tensor  # bool (F,): every value 0 or 1
    shares: dict[float, float]  # a value constant in this batch -> its share in other features


def feature_stats(x: torch.Tensor, axis: int) -> BatchStats | None:
    """The per-feature numbers of a floating input (feature axis ``axis``), from its first rows
    up to ``STAT_ELEMENTS`` values; None when the slice holds a NaN or Inf (nonfinite-input's
    business) or is empty."""
    width = x.shape[axis]
    per_row = x[0].numel() if x.shape[0] else 0
    if width == 0 or per_row == 0:
        return None
    rows = max(1, min(x.shape[0], STAT_ELEMENTS // per_row))
    values = x.detach()[:rows].movedim(axis, -1).reshape(-1, width)
    count = values.shape[0]
    picked = values[:: -(-count // QUANTILE_VALUES)].t().double().sort(dim=1).values
    k = picked.shape[1]
    tail = (k - 1) // 20
    quantiles = picked[:, [k // 4, k // 2, (3 * k) // 4, tail, k - 1 - tail]].t()
    low, high = torch.aminmax(values, dim=0)
    binary = ((values == 0) | (values == 1)).all(dim=0)
    packed = torch.cat([quantiles, low[None].double(), high[None].double(), binary[None].double()])
    packed = packed.cpu()  # the one copy (a sync, on sampled steps only)
    if not bool(torch.isfinite(packed).all()):
        return None
    low_c, high_c = packed[5], packed[6]
    constant = low_c == high_c
    shares: dict[float, float] = {}
    if bool(constant.any()) and not bool(constant.all()):
        others = values.index_select(1, (~constant).nonzero().flatten().to(values.device))
        for value in sorted({float(v) for v in low_c[constant].tolist()})[:3]:
            shares[value] = float((others == value).float().mean())
    return BatchStats(rows, low_c, high_c, packed[:3], packed[3:5], packed[7] > 0, shares)


@dataclass
class _Summary:
    """What a forward leaves on its record until it is settled."""

    key: tuple[str, tuple[int, ...]]  # (dtype, row shape): rows compare only within one key
    hashes: list[int]
    stats: BatchStats | None  # for forwards that started as training
    axis_name: str = "feature"


@dataclass
class _Features:
    """One model's feature set (by width and axis) over the sampled training batches."""

    batches: int = 0
    rows: int = 0
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    binary: torch.Tensor | None = None
    shares: dict[float, float] = field(default_factory=dict)
    medians: deque[torch.Tensor] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))
    spreads: deque[torch.Tensor] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))
    # How far each batch's 5% tails reach from its median, below and above (input-outlier).
    tails: deque[torch.Tensor] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))


@dataclass
class _ModelData:
    trained: dict[tuple[str, tuple[int, ...]], set[int]] = field(default_factory=dict)
    trained_count: int = 0
    trained_steps: tuple[int, int] = (0, 0)
    matched: set[int] = field(default_factory=set)
    eval_rows: int = 0
    hashed_rows: int = 0
    duplicate_rows: int = 0
    duplicate_batches: int = 0
    most_copies: int = 0
    zero_copies: bool = False
    features: dict[tuple[int, str], _Features] = field(default_factory=dict)


def _columns(indices: list[int], width: int, name: str) -> str:
    shown = ", ".join(str(i) for i in indices[:8]) + (", ..." if len(indices) > 8 else "")
    plural = "s" if len(indices) > 1 else ""
    return f"{name}{plural} {shown} (of {width})"


class DatasetRules(RuleGroup):
    """Row hashes and per-feature numbers of sampled inputs (see the module's docstring)."""

    rules = ("train-eval-overlap", "duplicate-rows", "constant-input", "input-outlier")

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._data: dict[str, _ModelData] = {}
        self._conv_first: dict[str, bool] = {}
        self._eval_step = -1
        self._eval_hashed = 0
        self._fired: set[tuple[str, str]] = set()

    def on_model(self, name: str, module: nn.Module) -> None:
        first = next(
            (
                m
                for m in module.modules()
                if not any(True for _ in m.children())
                and any(True for _ in m.parameters(recurse=False))
            ),
            None,
        )
        self._conv_first[name] = isinstance(first, nn.modules.conv._ConvNd)

    # --- reading (cheap, bounded) ----------------------------------------------------------------

    def _input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
        if self.engine.overfit_batch:
            return None
        tensors = input_tensors(args, kwargs)
        if not tensors or tensors[0].ndim < 2 or tensors[0].shape[0] == 0:
            return None
        return tensors[0]

    def _axis(self, model: str, x: torch.Tensor) -> tuple[int, str] | None:
        if not x.is_floating_point():
            return None
        if x.ndim == 2:
            return 1, "feature"
        if x.ndim == 3:
            return (1, "channel") if self._conv_first.get(model) else (2, "feature")
        if x.ndim in (4, 5):
            return 1, "channel"
        return None

    def on_forward(self, record: Forward, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = self._input(args, kwargs)
        if x is None:
            return
        stats = None
        axis_name = "feature"
        axis = self._axis(record.model, x)
        if axis is not None and record.training and record.grad_enabled:
            stats = feature_stats(x, axis[0])
            axis_name = axis[1]
        key = (str(x.dtype), tuple(x.shape[1:]))
        record.summary = _Summary(key, row_hashes(x), stats, axis_name)

    def on_eval_forward(
        self, record: Forward, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        data = self._data.get(record.model)
        if (
            data is None
            or not data.trained
            or record.rerun
            or (record.model, "overlap") in self._fired
        ):
            return
        if self.engine.step != self._eval_step:
            self._eval_step, self._eval_hashed = self.engine.step, 0
        if self._eval_hashed >= EVAL_FORWARDS:
            return
        x = self._input(args, kwargs)
        if x is None or x.shape[0] < 2:
            return
        self._eval_hashed += 1
        record.summary = _Summary((str(x.dtype), tuple(x.shape[1:])), row_hashes(x), None)

    # --- judging, in the order the forwards ran --------------------------------------------------

    def on_settled(self, forwards: list[Forward]) -> None:
        for record in forwards:
            summary = record.summary
            if summary is None:
                continue
            record.summary = None
            data = self._data.setdefault(record.model, _ModelData())
            if record.got_grad:
                self._trained(record, data, summary)
            elif len(summary.hashes) >= 2 and not record.rerun:
                self._evaluated(record, data, summary)

    def _trained(self, record: Forward, data: _ModelData, summary: _Summary) -> None:
        hashes = summary.hashes
        if data.trained_count < MAX_TRAINED:
            known = data.trained.setdefault(summary.key, set())
            before = len(known)
            known.update(hashes)
            data.trained_count += len(known) - before
            first = data.trained_steps[0] or record.step
            data.trained_steps = (first, record.step)
        if len(hashes) >= 2:
            self._duplicates(record, data, hashes)
        if summary.stats is not None:
            self._features(record, data, summary.stats, summary.axis_name)

    def _evaluated(self, record: Forward, data: _ModelData, summary: _Summary) -> None:
        known = data.trained.get(summary.key)
        data.eval_rows += len(summary.hashes)
        if not known:
            return
        data.matched.update(h for h in summary.hashes if h in known)
        needed = int(self.config.option("train-eval-overlap", "rows", 4))
        if len(data.matched) >= needed and (record.model, "overlap") not in self._fired:
            self._fired.add((record.model, "overlap"))
            low, high = data.trained_steps
            self.alert(
                "train-eval-overlap",
                f"an evaluation of {record.model} at step {record.step} scores rows it was "
                f"trained on: {len(data.matched)} distinct rows equal training rows",
                place=record.model,
                evidence=f"{len(data.matched)} of {data.eval_rows} evaluation rows hashed are "
                f"among {data.trained_count} training rows hashed at sampled steps "
                f"{low}-{high} (row hashes, exact)",
            )

    def _duplicates(self, record: Forward, data: _ModelData, hashes: list[int]) -> None:
        counts = Counter(hashes)
        data.hashed_rows += len(hashes)
        data.duplicate_rows += len(hashes) - len(counts)
        data.duplicate_batches += 1
        data.most_copies = max(data.most_copies, max(counts.values()))
        data.zero_copies = data.zero_copies or counts.get(0, 0) > 1
        share = data.duplicate_rows / data.hashed_rows
        threshold = self.config.option("duplicate-rows", "share", 0.2)
        if data.duplicate_batches >= 3 and data.hashed_rows >= 128 and share >= threshold:
            blank = "; the most repeated row is all zeros" if data.zero_copies else ""
            self.alert(
                "duplicate-rows",
                f"{share:.0%} of the training rows of {record.model} repeat another row of "
                f"the same batch (sampled steps up to {record.step})",
                place=record.model,
                evidence=f"{data.duplicate_rows} of {data.hashed_rows} hashed rows in "
                f"{data.duplicate_batches} batches are copies; up to {data.most_copies} "
                f"copies of one row in a batch{blank}",
            )

    def _features(self, record: Forward, data: _ModelData, stats: BatchStats, name: str) -> None:
        width = stats.low.numel()
        state = data.features.setdefault((width, name), _Features())
        state.batches += 1
        state.rows += stats.rows
        if state.low is None or state.high is None or state.binary is None:
            state.low, state.high, state.binary = stats.low, stats.high, stats.binary
        else:
            state.low = torch.minimum(state.low, stats.low)
            state.high = torch.maximum(state.high, stats.high)
            state.binary = state.binary & stats.binary
        for value, share in stats.shares.items():
            state.shares[value] = max(state.shares.get(value, 0.0), share)
        state.medians.append(stats.quartiles[1])
        state.spreads.append((stats.quartiles[2] - stats.quartiles[0]) / _SPREAD)
        state.tails.append(
            torch.stack([stats.quartiles[1] - stats.tails[0], stats.tails[1] - stats.quartiles[1]])
        )
        self._constant(record, state, width, name)
        self._outlier(record, state, stats, name)

    def _constant(self, record: Forward, state: _Features, width: int, name: str) -> None:
        if (record.model, "constant") in self._fired or state.low is None or state.high is None:
            return
        rows = int(self.config.option("constant-input", "rows", 256))
        if state.batches < 3 or state.rows < rows:
            return
        low = state.low.tolist()
        constant = [j for j, same in enumerate((state.low == state.high).tolist()) if same]
        if not constant:
            return
        padding = set()
        if width >= PADDING_WIDTH:  # zero runs at either end of a wide axis: padding
            for run in (range(width), range(width - 1, -1, -1)):
                for j in run:
                    if low[j] != 0.0 or state.low[j] != state.high[j]:
                        break
                    padding.add(j)
        report = [
            j for j in constant if j not in padding and state.shares.get(low[j], 0.0) < COMMON_VALUE
        ]
        if not report:
            return
        self._fired.add((record.model, "constant"))
        if len(constant) == width:
            what = f"every input {name} of {record.model} is constant"
        else:
            values = sorted({low[j] for j in report})
            value = _fmt(values[0]) if len(values) == 1 else "constant"
            what = (
                f"input {_columns(report, width, name)} of {record.model} "
                + (f"is {value}" if len(values) == 1 else "are constant")
                + " in every sampled training row"
            )
        self.alert(
            "constant-input",
            what,
            place=record.model,
            evidence=f"{state.rows} rows in {state.batches} sampled batches up to step "
            f"{record.step}; " + ", ".join(f"{name} {j} = {_fmt(low[j])}" for j in report[:4]),
        )

    def _outlier(self, record: Forward, state: _Features, stats: BatchStats, name: str) -> None:
        """A value far from its feature's bulk (``z`` robust standard deviations, IQR / 1.349)
        and far beyond the feature's own tail (``tail`` times as far from the median as the
        batches' 5th / 95th percentiles reach, on its side, the median over batches). A
        heavy-tailed feature fills its tail in every batch: pytorch/examples' regression feeds
        [x, x^2, x^3, x^4] of x ~ N(0, 1) in batches of 32, whose x^4 lies 100+ robust
        deviations out every few hundred rows (the IQR test alone fired in 17 of 20 seeded
        60-batch runs), yet its 95th percentile reaches ~13 from the median and its largest
        values 13-18x that (tests/checks/corpus). A sentinel or a unit error lies hundreds of
        times farther out than its feature's 5% tails (demos/bugs: -999 against 1.5 for a
        standard normal, 659x; an image left in 0..255 against 0.73, 348x) and makes up too few
        values to move those percentiles (up to 5% of a batch)."""
        if state.batches < 2 or (record.model, "outlier") in self._fired or state.binary is None:
            return
        center = torch.stack(list(state.medians)).median(dim=0).values
        scale = torch.stack(list(state.spreads)).median(dim=0).values
        usable = (scale > 0) & ~state.binary
        if not bool(usable.any()):
            return
        reach = torch.stack(list(state.tails)).median(dim=0).values  # (2, F): below, above
        threshold = self.config.option("input-outlier", "z", 100.0)
        tail = self.config.option("input-outlier", "tail", 100.0)
        above = (stats.high - center) / scale
        below = (center - stats.low) / scale
        # Beyond the tail on its side (a zero reach: no tail to explain the value).
        above = torch.where(stats.high - center > tail * reach[1], above, torch.zeros_like(above))
        below = torch.where(center - stats.low > tail * reach[0], below, torch.zeros_like(below))
        z = torch.where(usable, torch.maximum(above, below), torch.zeros_like(scale))
        worst = int(z.argmax())
        score = float(z[worst])
        if not math.isfinite(score) or score <= threshold:
            return
        self._fired.add((record.model, "outlier"))
        high_side = bool(above[worst] >= below[worst])
        value = float(stats.high[worst] if high_side else stats.low[worst])
        side_reach = float(reach[1 if high_side else 0][worst])
        times = abs(value - float(center[worst])) / side_reach if side_reach > 0 else math.inf
        self.alert(
            "input-outlier",
            f"input {name} {worst} of {record.model} has the value {_fmt(value)} at step "
            f"{record.step}: {score:.0f} standard deviations from its median "
            f"{_fmt(float(center[worst]))}",
            place=record.model,
            evidence=f"{name} {worst}: median {_fmt(float(center[worst]))}, robust std "
            f"(IQR / 1.349) {_fmt(float(scale[worst]))}, its 5% tail reaches "
            f"{_fmt(side_reach)} from the median ({_fmt(times)}x that) over {state.batches} "
            f"sampled batches; thresholds {_fmt(threshold)} std and {_fmt(tail)}x the tail",
        )
