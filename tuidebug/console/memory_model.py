"""The GPU & memory screen's state: plain Python (no Textual, no torch), folded from messages.

It folds :mod:`tuidebug.wire.gpu_messages` (NVML polls, allocator figures, parameter and
optimizer-state bytes, the allocator's OOM moment, CUDA memory snapshots), the layers sampler's
``LayerTable`` and ``LayerStats`` (for activation memory), and ``ScriptError`` (for the OOM
report).

Activation memory per layer is computed here from the shapes and dtypes the layers sampler
already sends (no extra cost in the training process):

- ``out``: bytes of the module's own outputs on the sampled step (every tensor in its output,
  times the number of calls). For a leaf module this is what autograd keeps for backward (the
  next op's saved input), which is the usual estimate; a container's output is its last child's.
- ``held``: for a container, the sum of ``out`` over the leaf modules under it (leaves: their own
  ``out``). That is what checkpointing the block (``torch.utils.checkpoint``) would free, less its
  own output (still kept): ``saving = held - out``. The top consumers are ranked by it.

The OOM report is not sent by the probe (it cannot hook the script's death): it is built here
when a ``ScriptError`` says "out of memory", from the latest allocator figures of that rank, the
``OomMoment`` its allocator sent at the failing allocation (when torch has the observer), the
batch shape and the biggest layers.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tuidebug.gpu.history import MemoryHistory
from tuidebug.wire.gpu_messages import (
    AllocatorStats,
    GpuStats,
    MemorySnapshotResult,
    MemorySnapshotStarted,
    OomMoment,
    ParamMemory,
    ProcessStats,
)
from tuidebug.wire.layer_messages import LayerStats, LayerTable
from tuidebug.wire.messages import Message, RunInfo, ScriptError

__all__ = [
    "DTYPE_BYTES",
    "WAYS_OUT",
    "GpuState",
    "LayerMemory",
    "OomReport",
    "is_oom",
    "shape_elements",
]

DTYPE_BYTES = {
    "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8, "double": 8,
    "int64": 8, "long": 8, "int32": 4, "int": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "complex64": 8, "complex128": 16, "float8_e4m3fn": 1, "float8_e5m2": 1,
}  # fmt: skip
DEFAULT_DTYPE_BYTES = 4  # unknown dtype (no floating output seen): float32, the common case

WAYS_OUT = (
    "smaller batch (or gradient accumulation to keep the effective batch)",
    "gradient checkpointing of the top blocks (torch.utils.checkpoint)",
    "mixed precision (torch.autocast with bfloat16/float16) halves activations",
    "free what the loop keeps: loss.item(), not loss, in lists; del big tensors",
)

# A shape in the sampler's text: "64×3×32×32"; "()" is a scalar. Digits inside names (dict keys
# like 'layer1') are not shapes: they touch a letter, a quote or an underscore.
_SHAPE = re.compile(r"(?<![\w'\"])(\d+(?:×\d+)*)(?![\w'\"])|\(\)")

CHART_LEN = 300  # allocator samples kept per rank and device (about 5 minutes at 1 Hz)


def shape_elements(text: str) -> int:
    """Elements in every tensor of a shape text: ``(4×8, 4×8)`` -> 64; ``()`` -> 1."""
    total = 0
    for match in _SHAPE.finditer(text):
        dims = match.group(1)
        if dims is None:
            total += 1
            continue
        count = 1
        for d in dims.split("×"):
            count *= int(d)
        total += count
    return total


def is_oom(error: ScriptError) -> bool:
    """Whether the script died of running out of (device) memory."""
    return error.exc_type == "OutOfMemoryError" or "out of memory" in error.text.lower()


@dataclass
class LayerMemory:
    """One module's memory on a rank: activations of the last sampled step, and its tensors."""

    index: int
    name: str
    type: str
    depth: int
    leaf: bool
    out: int = 0  # bytes of its own outputs (× calls)
    held: int = 0  # bytes of outputs of the leaves under it (a leaf: its own)
    params: int = 0  # bytes of its own parameters (not its children's)
    grads: int = 0
    state: int = 0  # optimizer state of its own parameters
    estimated: bool = False  # params/grads assumed float32 (no ParamMemory from the probe)

    @property
    def saving(self) -> int:
        """What checkpointing this block would free: everything inside but its output."""
        return max(0, self.held - self.out) if not self.leaf else 0


@dataclass
class _Rank:
    tables: dict[int, LayerTable] = field(default_factory=dict)  # by base index
    stats: LayerStats | None = None
    measured: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # param, grad, state
    optimizer: str = ""


@dataclass
class OomReport:
    """What the console shows when a rank died out of memory."""

    error: ScriptError
    allocator: AllocatorStats | None
    moment: OomMoment | None
    batch: str
    top: list[LayerMemory]
    ways_out: tuple[str, ...] = WAYS_OUT


class GpuState:
    """Everything the GPU screen and the dashboard summary show; ``version`` moves on change."""

    def __init__(self, history_len: int = 300) -> None:
        self.version = 0
        self.gpu: GpuStats | None = None
        self.history = MemoryHistory(history_len)
        self.allocator: dict[int, AllocatorStats] = {}  # by rank
        self.allocated: dict[tuple[int, int], deque[float]] = {}  # (rank, device) -> fractions
        self.processes: dict[int, ProcessStats] = {}  # by pid
        self.moments: dict[int, OomMoment] = {}  # by rank
        self.oom: OomReport | None = None
        self.snapshot_started: dict[int, MemorySnapshotStarted] = {}  # by rank
        self.snapshots: dict[int, MemorySnapshotResult] = {}  # by rank: the latest of each
        self.jump = False  # open the screen now (a first OOM)
        self.run_id = ""
        self.cwd = ""
        self.layers_version = 0
        self._ranks: dict[int, _Rank] = {}

    # --- folding ----------------------------------------------------------------------------

    def fold(self, messages: Iterable[Message]) -> None:
        changed = False
        for message in messages:
            if isinstance(message, GpuStats):
                self.gpu = message
                self.history.add(message.snapshot)
                self.processes = {p.pid: p for p in message.processes}
            elif isinstance(message, AllocatorStats):
                self.allocator[message.rank] = message
                for d in message.devices:
                    series = self.allocated.setdefault(
                        (message.rank, d.device), deque(maxlen=CHART_LEN)
                    )
                    series.append(d.allocated / d.total if d.total else 0.0)
            elif isinstance(message, LayerTable):
                self._rank(message.rank).tables[message.base] = message
                self.layers_version += 1
            elif isinstance(message, LayerStats):
                self._rank(message.rank).stats = message
                self.layers_version += 1
            elif isinstance(message, ParamMemory):
                rank = self._rank(message.rank)
                rank.measured = {
                    name: (p, g, s)
                    for name, p, g, s in zip(
                        message.names, message.params, message.grads, message.state, strict=False
                    )
                }
                rank.optimizer = message.optimizer
                self.layers_version += 1
            elif isinstance(message, OomMoment):
                self.moments[message.rank] = message
            elif isinstance(message, MemorySnapshotStarted):
                self.snapshot_started[message.rank] = message
            elif isinstance(message, MemorySnapshotResult):
                self.snapshots[message.rank] = message
            elif isinstance(message, ScriptError):
                if is_oom(message) and self.oom is None:
                    self.oom = self._oom_report(message)
                    self.jump = True
            elif isinstance(message, RunInfo):
                self.run_id, self.cwd = message.run_id, message.cwd
                continue  # not shown here
            else:
                continue
            changed = True
        if changed:
            self.version += 1

    def recording(self) -> list[int]:
        """Ranks recording a snapshot now: started, and no result since."""
        return [
            rank
            for rank, started in self.snapshot_started.items()
            if rank not in self.snapshots or self.snapshots[rank].step <= started.step
        ]

    def latest_snapshot(self) -> MemorySnapshotResult | None:
        """The latest snapshot of the lowest rank that answered (or None)."""
        return self.snapshots[min(self.snapshots)] if self.snapshots else None

    def _rank(self, rank: int) -> _Rank:
        found = self._ranks.get(rank)
        if found is None:
            found = self._ranks[rank] = _Rank()
        return found

    @property
    def ranks(self) -> list[int]:
        return sorted(self._ranks)

    # --- activation and parameter memory ----------------------------------------------------

    def layer_memory(self, rank: int = 0) -> list[LayerMemory]:
        """Every module of ``rank``'s models, in tree order, with its memory figures."""
        info = self._ranks.get(rank)
        if info is None:
            return []
        rows: list[LayerMemory] = []
        by_index: dict[int, LayerMemory] = {}
        for base in sorted(info.tables):
            table = info.tables[base]
            n = len(table.names)
            for i, name in enumerate(table.names):
                # A leaf has no child: the next module in pre-order is not deeper.
                leaf = i + 1 >= n or table.depths[i + 1] <= table.depths[i]
                row = LayerMemory(
                    base + i,
                    f"{table.model}.{name}" if name else table.model,
                    table.types[i],
                    table.depths[i],
                    leaf,
                )
                rows.append(row)
                by_index[row.index] = row
            for pname, layer, shape in zip(
                table.param_names, table.param_layers, table.param_shapes, strict=False
            ):
                target = by_index.get(layer)  # an absolute index, as in LayerStats
                if target is None:
                    continue
                # Both sides name a parameter as the model's named_parameters() does.
                found = info.measured.get(pname)
                if found is not None:
                    target.params += found[0]
                    target.grads += found[1]
                    target.state += found[2]
                else:
                    # Not measured yet (no step seen): float32 is assumed, marked "est.".
                    size = shape_elements(shape) * DEFAULT_DTYPE_BYTES
                    target.params += size
                    target.grads += size
                    target.estimated = True
        stats = info.stats
        if stats is not None:
            for layer, calls, shape, dtype in zip(
                stats.layers, stats.calls, stats.out_shapes, stats.dtypes, strict=False
            ):
                target = by_index.get(layer)
                if target is not None:
                    per = DTYPE_BYTES.get(dtype, DEFAULT_DTYPE_BYTES)
                    target.out = shape_elements(shape) * per * max(1, calls)
        # held: leaves' out summed into every ancestor (pre-order + depths give the ancestors).
        stack: list[LayerMemory] = []
        for row in rows:
            while stack and stack[-1].depth >= row.depth:
                stack.pop()
            if row.leaf and row.out:
                row.held += row.out
                for ancestor in stack:
                    ancestor.held += row.out
            stack.append(row)
        return rows

    def top_consumers(self, rank: int = 0, count: int = 6) -> list[LayerMemory]:
        """Blocks (not the whole model) where checkpointing would free the most."""
        blocks = [r for r in self.layer_memory(rank) if not r.leaf and r.depth > 0 and r.saving]
        return sorted(blocks, key=lambda r: -r.saving)[:count]

    def top_layers(self, rank: int = 0, count: int = 6) -> list[LayerMemory]:
        """Leaf modules with the biggest outputs (activation memory kept for backward)."""
        leaves = [r for r in self.layer_memory(rank) if r.leaf and r.out]
        return sorted(leaves, key=lambda r: -r.out)[:count]

    def batch_shape(self, rank: int = 0) -> str:
        """The shapes the model was called with, from the probe or the layers sampler."""
        alloc = self.allocator.get(rank)
        if alloc is not None and alloc.batch:
            return alloc.batch
        info = self._ranks.get(rank)
        if info is None or info.stats is None:
            return ""
        roots = {base for base in info.tables}  # index of each model's root module
        for layer, shape in zip(info.stats.layers, info.stats.in_shapes, strict=False):
            if layer in roots:
                return shape
        return ""

    def _oom_report(self, error: ScriptError) -> OomReport:
        rank = error.rank
        top = self.top_consumers(rank) or self.top_layers(rank)
        return OomReport(
            error=error,
            allocator=self.allocator.get(rank),
            moment=self.moments.get(rank),
            batch=self.batch_shape(rank),
            top=top,
        )
