"""The layer sampler: per-module statistics on sampled steps, NaN/Inf forensics, in budget.

How it stays cheap (docs/layers.md has the measurements):
- On a step it does not sample, :meth:`LayerSampler.on_boundary` compares two integers and a
  float; no tensor is touched and no step hook is installed. What runs every step is one
  forward pre-hook per root model (keeps a reference to the batch and, for a model whose
  forward draws random numbers, the CPU RNG state, for forensics) and the tripwire (an
  optimizer step pre-hook that reads the loss and a few small gradients, CPU only).
- A sampled step gets ONE global module forward hook (one install however many modules; kept
  while the next step is sampled too). Post-accumulate-grad hooks on every parameter only
  while the backward order is unknown and on forensic samples. Never
  ``register_full_backward_hook`` (~220 µs per module per step). Removed in ``finally``.
- Per module output, sum, L2 norm, min and max written into the sampler's
  :class:`~tuidebug.probe.statbuffer.StatBuffer` while the output is still in cache: on the
  CPU by a C kernel in one read (exact zeros counted too), else by three torch reductions
  with ``out=`` (``std_mean`` alone costs 150 µs here); parameter-gradient norms into its
  tail the same way (torch: one ``torch._foreach_norm``). The buffer's prefix is the one
  host copy of the sample (on CUDA without blocking: read at a later boundary once its event
  completed).
  On an accelerator small outputs are batched instead (one stack and four kernels per group
  of equal shapes at the step's end: launches, not bytes, are the cost there). Grad mode is
  off during them (cheaper than a detached view of each output); a ReLU of the output just
  measured takes its min and max from that output's (one torch op fewer).
- Dense sampling (every step or nearly) spreads the costly extras over a cycle of
  ``DENSE_CYCLE`` samples: update ratio and weight norms, exact-zero counts, histograms.
- The cadence comes from :class:`~tuidebug.probe.schedule.Schedule`: the sampler times itself
  (hooks, statistics, the copy; on CUDA the host side only) and samples as often as ``budget``
  of the measured step time allows. ``every=N`` forces it.

std is computed from the sum and the L2 norm (``E[x²] - E[x]²`` in float64 on the host): exact
enough for a debugging view, far cheaper than a two-pass std on the device.

Numerics: hooks read ``output.detach()`` and return None, so the forward result and the autograd
graph are untouched; the sampler never changes train/eval mode and never draws random numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.modules import module as _module_globals
from torch.nn.modules.module import register_module_forward_hook

from tuidebug.probe.nonfinite import (
    Culprit,
    Forensics,
    GradEvent,
    locate_backward,
    locate_forward,
    to_cpu,
)
from tuidebug.probe.replay import preserved, replay_backward, replay_forward, tensors_in
from tuidebug.probe.schedule import Schedule
from tuidebug.probe.statbuffer import StatBuffer, host_sum
from tuidebug.wire.layer_messages import Histogram, LayerStats, LayerTable, NonFinite
from tuidebug.wire.messages import Message

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer
    from torch.utils.hooks import RemovableHandle

__all__ = ["LayerSampler", "describe", "host_copy"]

log = logging.getLogger("tuidebug.probe")

BINS = 32
DENSE_INTERVAL = 4  # sampling this often or more is "dense": the costly extras are spread out
# Dense sampling spreads the costly extras over a cycle of DENSE_CYCLE samples, never two on
# one sample: the update ratio (a copy of every weight, their norms) on phase 0, exact zeros of
# ReLU-like layers (a slow count on the CPU) on phase DENSE_CYCLE // 2, round-robin histograms
# on phase 2 of every other cycle. Each changes slowly from one step to the next.
DENSE_CYCLE = 8
_DEAD_UNIT_MODULES = (
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.LeakyReLU,
    torch.nn.PReLU,
    torch.nn.RReLU,
    torch.nn.ELU,
    torch.nn.CELU,
    torch.nn.SELU,
    torch.nn.Hardtanh,
    torch.nn.Hardswish,
    torch.nn.Threshold,
    torch.nn.Dropout,
)
_CLAMP_TOP: dict[type[torch.nn.Module], float] = {torch.nn.ReLU: math.inf, torch.nn.ReLU6: 6.0}
HISTOGRAM_LAYERS = 1  # layers that get histograms, round robin (+ the focused one, every sample)
HISTOGRAM_EVERY = 4  # samples between two round-robin histograms (each costs ~70 µs a tensor)
KEEP_EVERY = 30.0  # seconds between two refreshes of the kept last-finite parameters
TRIP_LAYERS = 16  # layers whose smallest parameter's gradient the tripwire sums every step
_TRIP_TOLIST = 4096  # a 1-d gradient up to this long is summed in Python by the tripwire
FORENSIC_TRIES = 3  # forensic samples after a non-finite value before giving up locating it
_NEVER = 1 << 62
_clock = time.perf_counter
_set_grad_enabled = torch._C._set_grad_enabled  # what torch.no_grad() calls, without the object
_global_with_kwargs: dict[int, bool] = getattr(
    _module_globals, "_global_forward_hooks_with_kwargs", {}
)
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FLOATS_PER_RECORD = 4  # sum, norm, min, max
# On an accelerator, outputs up to BATCH_NUMEL elements are measured together at the step's
# end: one stack and four reductions per group of equal shapes instead of four kernel
# launches per module (there the cost of a small op is its launch). On the CPU each output is
# measured in its hook, while it is still in cache: measured on the benchmark model, batching
# there costs more (+400 µs a step) than it saves (in the hook: +300 µs), because re-reading
# outputs that left the cache costs more than the dispatches saved. BATCH_ON_CPU is for tests.
BATCH_NUMEL = 1 << 17
BATCH_ON_CPU = False
DEFERRED_NUMEL = 1 << 22  # deferred elements held at most before measuring them early
_SHAPE_CACHE_LIMIT = 4096


def host_copy(tensor: torch.Tensor) -> list[float]:
    """THE device-to-host copy of a CPU sample: one per sampled step (tests count calls)."""
    values: list[float] = tensor.tolist()
    return values


# --- describing shapes ---------------------------------------------------------------------------

_shape_strings: dict[tuple[int, ...], str] = {}


def _shape(t: torch.Tensor) -> str:
    shape = tuple(t.shape)
    text = _shape_strings.get(shape)
    if text is None:
        text = "×".join(map(str, shape)) if shape else "()"
        if len(_shape_strings) < _SHAPE_CACHE_LIMIT:
            _shape_strings[shape] = text
    return text


def describe(obj: Any, depth: int = 0) -> str:
    """A short text of the tensor shapes in ``obj``: ``128×256``, ``(4×8, {'h': 4×8})``."""
    if isinstance(obj, torch.Tensor):
        return _shape(obj)
    if depth > 3:
        return "…"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(describe(o, depth + 1) for o in obj[:8])
        more = ", …" if len(obj) > 8 else ""
        return f"({inner}{more})" if isinstance(obj, tuple) else f"[{inner}{more}]"
    if isinstance(obj, dict):
        items = list(obj.items())[:8]
        inner = ", ".join(f"{k}: {describe(v, depth + 1)}" for k, v in items)
        return "{" + inner + (", …" if len(obj) > 8 else "") + "}"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.fields(obj)[:8]
        inner = ", ".join(f"{f.name}={describe(getattr(obj, f.name), depth + 1)}" for f in fields)
        return f"{type(obj).__name__}({inner})"
    if obj is None:
        return "None"
    if isinstance(obj, (int, float, bool, str)):
        return type(obj).__name__
    return type(obj).__name__


def _primary(obj: Any, depth: int = 0) -> torch.Tensor | None:
    """The first tensor of a (nested) output: the one the activation statistics describe."""
    if isinstance(obj, torch.Tensor):
        return obj
    if depth > 3:
        return None
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _primary(o, depth + 1)
            if t is not None:
                return t
    elif isinstance(obj, dict):
        for o in obj.values():
            t = _primary(o, depth + 1)
            if t is not None:
                return t
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            t = _primary(getattr(obj, f.name), depth + 1)
            if t is not None:
                return t
    return None


def _first_shape(args: tuple[Any, ...]) -> Any:
    """The shape of the first positional argument when it is a tensor (a cheap cache key)."""
    first = args[0] if args else None
    return first.shape if isinstance(first, torch.Tensor) else type(first)


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


def _fmt_module(module: nn.Module) -> str:
    return type(module).__name__


# --- the sampler ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Model:
    name: str
    root: weakref.ref[nn.Module]
    base: int
    count: int
    pre_hook: RemovableHandle | None


class _Sample:
    """What the hooks of one sampled step collect (device tensors, not yet read)."""

    __slots__ = (
        "block_slots",
        "blocks",
        "buf_slots",
        "count_all",
        "count_dead",
        "data_fed",
        "defer",
        "deferred",
        "deferred_numel",
        "derived",
        "float_slots",
        "floats",
        "forensic",
        "grad_events",
        "grad_order",
        "hist",
        "in_shapes",
        "ints",
        "last_out",
        "meta",
        "records",
        "slots",
        "stale",
        "step",
        "tensor_handles",
    )

    def __init__(self, step: int, forensic: bool) -> None:
        self.step = step
        self.forensic = forensic
        self.records: list[tuple[int, int, int]] = []  # (layer, slot, numel); slot -1 = no stats
        self.slots = 0  # outputs measured so far (a slot each)
        self.count_all = True  # count exact zeros of every output
        self.count_dead = False  # count them for ReLU-like layers (dense sampling, see _arm)
        self.defer = False  # accelerator outputs may wait for the step's end (_flush)
        # Statistics (sum, norm, min, max: 4 per slot), in one of three places: written into
        # the sampler's StatBuffer (buf_slots, in order); computed in the hook as 0-d tensors
        # when the buffer cannot take them (float_slots: another dtype or device, or full);
        # batched, one (k, 4) block per group of deferred outputs (block_slots).
        self.buf_slots: list[int] = []
        self.floats: list[torch.Tensor] = []
        self.float_slots: list[int] = []
        self.blocks: list[torch.Tensor] = []
        self.block_slots: list[int] = []
        # Outputs whose statistics wait for the step's end (see _flush):
        # (slot, layer, detached output, its version counter then, count its zeros?).
        self.deferred: list[tuple[int, int, torch.Tensor, int, bool]] = []
        self.deferred_numel = 0
        self.stale: set[int] = set()  # deferred outputs changed in place before measured
        # Per slot: count of nonzeros (None: not counted; a float: counted on the host by the
        # C kernel); forensic samples add nonfinite, NaN and non-finite inputs counts.
        self.ints: list[torch.Tensor | float | None] = []
        self.meta: dict[int, tuple[str, str, str]] = {}  # layer -> (out shape, dtype, device)
        self.in_shapes: dict[int, str] = {}
        self.hist: list[tuple[int, int, torch.Tensor]] = []  # (layer, slot, counts)
        self.last_out: tuple[torch.Tensor, int, int] | None = None  # (tensor, slot, version)
        # Slots whose min and max follow from another slot's: (slot, source slot, clamp top).
        self.derived: list[tuple[int, int, float]] = []
        self.grad_order: list[int] = []  # parameter indices in backward order
        self.grad_events: list[tuple[GradEvent, torch.Tensor | None]] = []
        self.tensor_handles: list[Any] = []
        self.data_fed: set[int] = set()  # layers with parameters whose inputs need no grad


class LayerSampler:
    """Per-layer statistics on sampled steps, within a cost budget. See the module docstring.

    Args:
        send: Where messages go (the probe's link); called on the training thread.
        rank: The rank stamped on messages.
        budget: Fraction of the step time the sampler may cost (0.01 = 1%).
        every: Sample every ``every`` steps whatever the cost.
        pause_on_nonfinite: :meth:`on_boundary` returns True at the first non-finite value.
        keep_last_finite: Keep the start-of-step weights of the last all-finite sample for
            forensics (a copy of the parameters; on an accelerator it stays on the device until
            a non-finite value is seen, then goes to the CPU).
        histogram_layers: Layers per sample that get histograms (round robin), plus the one
            chosen with :meth:`focus`.
        loss_source: Returns the loss whose ``backward`` is running (the probe has it: a float,
            or a tensor), or None. Lets the tripwire check one scalar instead of the output
            gradient.
    """

    def __init__(
        self,
        send: Callable[[Message], None],
        rank: int,
        *,
        budget: float = 0.01,
        every: int | None = None,
        pause_on_nonfinite: bool = True,
        keep_last_finite: bool = True,
        histogram_layers: int = HISTOGRAM_LAYERS,
        loss_source: Callable[[], Any] | None = None,
    ) -> None:
        self._send_fn = send
        self.rank = rank
        self.schedule = Schedule(budget, every)
        self.schedule.next_step = _NEVER
        self.pause_on_nonfinite = pause_on_nonfinite
        self.keep_last_finite = keep_last_finite
        self.histogram_layers = histogram_layers
        self.pid = os.getpid()
        self.disabled = False
        self.forensics: Forensics | None = None
        """Set at the first non-finite value: what was seen, where, and the data kept."""
        self.samples = 0
        self._models: list[_Model] = []
        self._optimizers: list[weakref.ref[Optimizer]] = []
        self._index: dict[int, int] = {}  # id(module) -> layer index
        self._layer_names: list[str] = []
        self._layer_model: list[int] = []
        self._layer_params: list[list[int]] = []  # layer -> its own parameter indices
        self._params: list[weakref.ref[torch.nn.Parameter]] = []
        self._param_names: list[str] = []
        self._param_layer: list[int] = []
        self._need_plan = False
        self._last_now: float | None = None
        self._suspended = False  # see suspend()
        self._rearm = False  # suspend() took down a sample armed for the next step
        self._sample: _Sample | None = None
        self._forward_handle: RemovableHandle | None = None
        self._param_handles: list[RemovableHandle] = []
        self._arm_params: list[tuple[int, torch.nn.Parameter]] = []
        self._snapshot: list[torch.Tensor] = []
        self._snapshot_pool: list[torch.Tensor] = []  # reused snapshot buffers (dense sampling)
        self._buffer: StatBuffer | None = None  # where statistics are written (see statbuffer.py)
        self._last_slots = 0  # outputs the last sample measured (sizes the buffer)
        self._dense = False
        self._zero_layers: set[int] = set()  # layers whose exact zeros are dead units
        # ReLU layers (layer -> top of the clamp: inf, 6 for ReLU6): min and max of the output
        # are the input's clamped, when the input is the output measured just before.
        self._clamp_layers: dict[int, float] = {}
        self._eager_layers: set[int] = set()  # outputs changed in place later: measure in hook
        self._grad_order: list[int] = []  # parameter indices in the last backward order seen
        self._meta_cache: dict[int, tuple[Any, str, bool, tuple[str, str, str]]] = {}
        self._hist_layers: set[int] = set()
        self._cost = 0.0
        # The every-step work of this step so far (root pre-hook, tripwire): the budget pays
        # for it too (Schedule.note_step).
        self._per_step = 0.0
        self._hist_cursor = 0
        self._focus = -1
        self._forensic_left = 0
        self._pending: deque[tuple[Any, ...]] = deque()  # CUDA samples whose copy is in flight
        self._last_inputs: Any = None
        self._last_finite: tuple[int, list[torch.Tensor], list[int]] | None = None
        self._keep_next = 0.0
        # The tripwire (see "Tripwire" below): CPU only, armed until the first non-finite value.
        self._loss_source = loss_source
        self._step = 0  # the last step that ended; the running one is _step + 1
        self._last_root: nn.Module | None = None
        self._last_rng: torch.Tensor | None = None
        # Whether the root's forward draws CPU random numbers (dropout), so that a replay needs
        # the RNG state it started from: assumed until a sample shows otherwise, checked again
        # on every sample (see _on_root_call).
        self._rng_used = True
        self._watched: dict[int, weakref.ref[torch.nn.Parameter]] = {}  # the tripwire's params
        self._trip_handles: dict[int, RemovableHandle] = {}  # their hooks (no optimizer known)
        self._trip_retargeted = False
        self._tripped: tuple[int, str, str] | None = None  # (step, kind, detail), replay pending
        self._opt_hooks: list[RemovableHandle] = []  # a step pre-hook per optimizer
        self._stepped = True  # an optimizer stepped since the last boundary (or none is known)
        self._replaying = False
        self._pause_pending = False
        self._replay_note = ""

    # --- setup --------------------------------------------------------------------------------

    def add_model(self, name: str, model: nn.Module) -> None:
        """Follow ``model``: number its modules and parameters and send its :class:`LayerTable`."""
        if not self._usable():
            return
        try:
            self._add_model(name, model)
        except Exception as error:
            self._disable(f"add_model failed: {error!r}")

    def _add_model(self, name: str, model: nn.Module) -> None:
        if id(model) in self._index:
            return
        base = len(self._layer_names)
        param_base = len(self._params)
        names: list[str] = []
        types: list[str] = []
        depths: list[int] = []
        own: list[int] = []
        p_names: list[str] = []
        p_layers: list[int] = []
        p_shapes: list[str] = []
        seen_params = {id(p()) for p in self._params if p() is not None}
        position: dict[str, int] = {}
        for qualified, module in model.named_modules():
            if id(module) in self._index:
                continue  # shared with a model already followed: stats go to the first one
            index = base + len(names)
            self._index[id(module)] = index
            if isinstance(module, _DEAD_UNIT_MODULES):
                self._zero_layers.add(index)
            if type(module) in _CLAMP_TOP:  # exact types: a subclass may change forward
                self._clamp_layers[index] = _CLAMP_TOP[type(module)]
            position[qualified] = len(names)
            names.append(qualified)
            types.append(_fmt_module(module))
            depths.append(0 if not qualified else qualified.count(".") + 1)
            mine: list[int] = []
            count = 0
            for pname, param in module.named_parameters(recurse=False):
                count += param.numel()
                if id(param) in seen_params:
                    continue
                seen_params.add(id(param))
                mine.append(len(self._params))
                self._params.append(weakref.ref(param))
                full = f"{qualified}.{pname}" if qualified else pname
                self._param_names.append(full)
                self._param_layer.append(index)
                p_names.append(full)
                p_layers.append(index)
                p_shapes.append(_shape(param))
            own.append(count)
            self._layer_names.append(qualified)
            self._layer_model.append(len(self._models))
            self._layer_params.append(mine)
        # Totals per module (its subtree): add each module's own count to its ancestors.
        totals = list(own)
        for qualified, i in position.items():
            if not qualified or not own[i]:
                continue
            parts = qualified.split(".")
            for cut in range(len(parts)):
                ancestor = ".".join(parts[:cut])
                j = position.get(ancestor)
                if j is not None:
                    totals[j] += own[i]
        pre_hook = model.register_forward_pre_hook(self._on_root_call, with_kwargs=True)
        self._models.append(_Model(name, weakref.ref(model), base, len(names), pre_hook))
        if not self._watched:
            first = next((i for i in range(base, base + len(names)) if self._layer_params[i]), -1)
            if first >= 0:
                self._set_trip_layers([first])
        self._send(
            LayerTable(
                rank=self.rank,
                model=name,
                base=base,
                names=names,
                types=types,
                depths=depths,
                params=totals,
                param_base=param_base,
                param_names=p_names,
                param_layers=p_layers,
                param_shapes=p_shapes,
            )
        )
        self._need_plan = True
        self.schedule.next_step = 0  # the next boundary plans the first sample

    def add_optimizer(self, optimizer: Optimizer) -> None:
        """Remember an optimizer (its parameters are the ones whose updates are measured)."""
        if not self._usable():
            return
        try:
            if any(ref() is optimizer for ref in self._optimizers):
                return
            self._optimizers.append(weakref.ref(optimizer))
            # The tripwire's check, right before each update (see "Tripwire" below).
            self._opt_hooks.append(optimizer.register_step_pre_hook(self._on_optimizer_pre))
            self._hook_watched()
        except Exception as error:
            self._disable(f"add_optimizer failed: {error!r}")

    def focus(self, layer: int) -> None:
        """Give ``layer`` histograms on every sample (the console's selected row); -1: none.

        Safe to call from another thread (the link's): it only sets an int.
        """
        self._focus = int(layer)

    def suspend(self) -> None:
        """Take every hook out (the root pre-hooks, the tripwire's, a sample's) and stop, keeping
        what was learnt (layer table, cadence, backward order), until :meth:`resume`. For a
        caller that runs the same or other models without the sampler in this process, like
        the overhead benchmark's interleaved variants. A sample armed for the next step is
        taken down and armed again by :meth:`resume`."""
        if self.disabled:
            return
        self._rearm = self._sample is not None
        self._remove_step_hooks()
        self._sample = None
        self._snapshot = []
        self._remove_root_hooks()
        self._remove_trip_hooks()
        self.disabled = self._suspended = True

    def resume(self) -> None:
        """Put back what :meth:`suspend` took out."""
        if not self._suspended:
            return
        self._suspended = self.disabled = False
        for model in self._models:
            root = model.root()
            if root is not None and model.pre_hook is None:
                model.pre_hook = root.register_forward_pre_hook(
                    self._on_root_call, with_kwargs=True
                )
        for ref in self._optimizers:
            optimizer = ref()
            if optimizer is not None:
                self._opt_hooks.append(optimizer.register_step_pre_hook(self._on_optimizer_pre))
        self._hook_watched()
        # The time suspended is no step: the first boundary after this one is not timed.
        self._last_now = None
        self._per_step = 0.0
        if self._rearm and self._models:
            try:
                self._arm(self._step + 1)
            except Exception as error:
                self._disable(f"resuming failed: {error!r}")

    def sample_next(self) -> None:
        """Sample the next step whatever the budget (e.g. when the console asks for fresh data)."""
        if self._models:
            self.schedule.next_step = 0

    # --- boundaries ----------------------------------------------------------------------------

    def on_boundary(self, step: int, now: float, loss: float | None, overhead: float = 0.0) -> bool:
        """Step ``step`` ended. True when the run should pause here (see the module doc).

        ``overhead``: seconds the probe spent on this step outside the sampler (its own
        boundary): the budget covers the whole probe, so samples make room for it.
        """
        # The fast path of an unsampled step: a float check, one subtraction, two compares.
        if self.disabled:
            return False
        last, self._last_now = self._last_now, now
        per_step, self._per_step = self._per_step, 0.0
        self._step = step
        # False when optimizers are known and none stepped (a skipped update, as GradScaler
        # does on inf): the tripwire then checks here.
        stepped, self._stepped = self._stepped, not self._opt_hooks
        if (
            self._sample is None
            and step + 1 < self.schedule.next_step
            and not self._pending
            and (loss is None or loss - loss == 0.0)
            and stepped
        ):
            if last is not None:
                self.schedule.note_step(now - last, per_step + overhead)
            return False
        if os.getpid() != self.pid:
            return False
        try:
            return self._slow_boundary(step, now, loss, stepped)
        except Exception as error:
            self._disable(f"on_boundary failed: {error!r}")
            return False

    def _slow_boundary(self, step: int, now: float, loss: float | None, stepped: bool) -> bool:
        pause = False
        if not stepped and self._tripped is None and self._armed():
            self._check_tripwire(step)
        if self._tripped is not None:
            # No optimizer step came between the trip and this boundary (a skipped update, a
            # hand-written loop): replay now (the weights may have been updated by hand).
            self._replay()
        if self._pause_pending:
            self._pause_pending = False
            pause = True
        if self._pending:
            pause |= self._drain(wait=False)
        if self._sample is not None:
            pause |= self._finish(step)
        if loss is not None and loss - loss != 0.0:
            pause |= self._nonfinite_loss(step, loss)
        if self._models and self._sample is None:
            if self._need_plan:
                self._need_plan = False
                self.schedule.first(step)
            if step + 1 >= self.schedule.next_step:
                self._arm(step + 1)
        if self._sample is None and self._forward_handle is not None:
            self._remove_forward_hook()  # no sample follows: nothing stays installed
        return pause

    def on_loss(self, step: int, loss: float) -> bool:
        """The loss of ``step`` arrived late (it was on the device). True: pause."""
        if self.disabled or os.getpid() != self.pid:
            return False
        try:
            if loss - loss != 0.0:
                return self._nonfinite_loss(step, loss)
        except Exception as error:
            self._disable(f"on_loss failed: {error!r}")
        return False

    def close(self) -> None:
        """Remove every hook the sampler installed. Idempotent; never raises."""
        try:
            self._remove_step_hooks()
        except Exception:
            log.exception("tuidebug: removing the layer hooks failed")
        self._remove_root_hooks()
        self._remove_trip_hooks()
        self._sample = None
        self._snapshot = []
        self._snapshot_pool = []
        self._arm_params = []
        self._last_inputs = None
        self._last_root = None
        self._last_rng = None
        try:
            self._drain(wait=True)
        except Exception:
            log.exception("tuidebug: reading the last layer sample failed")
        self.schedule.next_step = _NEVER

    # --- internals: arming ---------------------------------------------------------------------

    def _usable(self) -> bool:
        return not self.disabled and os.getpid() == self.pid

    def _send(self, message: Message) -> None:
        self._send_fn(message)

    def _disable(self, reason: str) -> None:
        if self.disabled:
            return
        self.disabled = True
        log.warning("tuidebug: layer statistics stopped (%s); training continues", reason)
        self.close()

    def _on_root_call(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        # Keep a reference (no copy: a few µs a step) to the last batch, for forensics, and
        # the CPU RNG state so that a replay draws the same dropout masks. The state is a new
        # 5 KB tensor (2 µs alone, 16 µs in context after the optimizer's sweep, measured), so
        # a model whose forward draws nothing skips it: each sample takes it and _finish looks
        # whether the step drew. A model that starts drawing between two samples (dropout
        # switched on later) replays from no saved state until the next sample: the replay
        # may then not reproduce the value and the forensic samples locate it instead.
        if self._replaying:
            return
        start = _clock()
        self._last_inputs = (args, kwargs)
        self._last_root = module
        if self.forensics is None and (self._rng_used or self._sample is not None):
            self._last_rng = torch.get_rng_state()
        else:
            self._last_rng = None
        self._per_step += _clock() - start

    def _arm(self, step: int) -> None:
        start = time.perf_counter()
        forensic = self._forensic_left > 0
        sample = _Sample(step, forensic)
        params: list[tuple[int, torch.nn.Parameter]] = []
        for i, ref in enumerate(self._params):
            p = ref()
            if p is not None and p.requires_grad:
                params.append((i, p))
        # Dense sampling (every step or nearly): the costly extras are spread out (DENSE_CYCLE).
        self._dense = dense = self.schedule.interval() < DENSE_INTERVAL
        phase = self.samples % DENSE_CYCLE
        with_update = not dense or phase == 0
        sample.count_all = not dense or forensic
        sample.count_dead = dense and phase == DENSE_CYCLE // 2
        sample.defer = not forensic
        if not dense:
            self._snapshot_pool = []
        with torch.no_grad():
            # Weights at the start of the step, for ||Δw|| at its end.
            self._snapshot = self._take_snapshot(params) if with_update else []
        self._arm_params = params
        self._prepare_buffer(params)
        self._hist_layers = self._pick_histogram_layers()
        self._sample = sample
        try:
            if self._forward_handle is None:
                self._forward_handle = register_module_forward_hook(
                    self._on_forward, with_kwargs=True
                )
            # Parameter hooks record the backward order (for the tripwire and as a hint when a
            # gradient goes non-finite) and, on forensic samples, check each gradient. The
            # order does not change from step to step: ordinary samples reuse the last one.
            if forensic or not self._grad_order:
                for i, p in params:
                    self._param_handles.append(
                        p.register_post_accumulate_grad_hook(partial(self._on_param_grad, i))
                    )
        except Exception:
            self._remove_step_hooks()
            self._sample = None
            raise
        self._cost = time.perf_counter() - start

    def _prepare_buffer(self, params: list[tuple[int, torch.nn.Parameter]]) -> None:
        """Make sure the StatBuffer can take the sample: 4 per output like the last sample's
        (at least one per module), plus 3 norms per parameter, on the parameters' device."""
        device = params[0][1].device if params else torch.device("cpu")
        reserve = 3 * len(params)
        need = 4 * max(self._last_slots, len(self._layer_names)) + reserve
        buffer = self._buffer
        if buffer is None or buffer.capacity < need or buffer.device != device:
            buffer = self._buffer = StatBuffer(device, 2 * need)
        buffer.reset(reserve)

    def _take_snapshot(self, params: list[tuple[int, torch.nn.Parameter]]) -> list[torch.Tensor]:
        """A copy of the weights. Under dense sampling the buffers of the last one are reused:
        a fresh copy every few steps means fresh memory from the OS every few steps (on the
        CPU, glibc hands big blocks back and takes them again: hundreds of page faults a
        step, measured). The pool goes when sampling stops being dense."""
        weights = [p.detach() for _, p in params]
        pool = self._snapshot_pool
        if (
            self._dense
            and len(pool) == len(weights)
            and all(
                b.shape == w.shape and b.dtype == w.dtype and b.device == w.device
                for b, w in zip(pool, weights, strict=True)
            )
        ):
            torch._foreach_copy_(pool, weights)
            return pool
        snapshot = [w.clone() for w in weights]
        self._snapshot_pool = snapshot if self._dense else []
        return snapshot

    def _pick_histogram_layers(self) -> set[int]:
        chosen: set[int] = set()
        n = len(self._layer_names)
        if self._focus >= 0:
            chosen.add(self._focus)
        if (
            self.samples % (2 * DENSE_CYCLE) != 2
            if self._dense
            else self.samples % HISTOGRAM_EVERY != 0
        ):
            return chosen
        for _ in range(min(self.histogram_layers, n)):
            chosen.add(self._hist_cursor % n)
            self._hist_cursor += 1
        return chosen

    def _remove_step_hooks(self, keep_forward: bool = False) -> None:
        """Remove the hooks of a sampled step (``keep_forward``: all but the global one)."""
        handles: list[Any] = [*self._param_handles]
        if self._sample is not None:
            handles.extend(self._sample.tensor_handles)
            self._sample.tensor_handles = []
        self._param_handles = []
        try:
            for handle in handles:
                handle.remove()
        finally:
            if not keep_forward:
                self._remove_forward_hook()

    def _remove_root_hooks(self) -> None:
        for model in self._models:
            if model.pre_hook is not None:
                try:
                    model.pre_hook.remove()
                except Exception:
                    log.exception("tuidebug: removing a model hook failed")
                model.pre_hook = None

    def _remove_forward_hook(self) -> None:
        handle, self._forward_handle = self._forward_handle, None
        if handle is not None:
            # torch's handle forgets the global "with kwargs" flag dict (a small leak per
            # sample): remove its entry ourselves.
            _global_with_kwargs.pop(handle.id, None)
            handle.remove()

    # --- internals: hooks (training thread, inside forward/backward) --------------------------

    def _on_forward(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        sample = self._sample
        if sample is None or self._replaying:
            return
        layer = self._index.get(id(module))
        if layer is None:
            return
        start = _clock()
        try:
            self._record(sample, layer, args, kwargs, output)
        except Exception as error:
            self._disable(f"forward hook failed on {type(module).__name__}: {error!r}")
        self._cost += _clock() - start

    def _describe(
        self,
        sample: _Sample,
        layer: int,
        x: torch.Tensor | None,
        args: Any,
        kwargs: Any,
        output: Any,
        grad_mode: bool,
    ) -> None:
        """Note the layer's shapes for this sample (first call of the layer in the sample).

        Describing shapes costs more than the statistics on small layers: the last description
        is reused while the primary output and the first input keep their shape.
        """
        key = (
            None if x is None else (x.shape, x.dtype, x.get_device()),
            _first_shape(args),
            grad_mode,
            type(output),
        )
        cached = self._meta_cache.get(layer)
        if cached is None or cached[0] != key or kwargs:
            inputs = describe(args) if not kwargs else f"{describe(args)} {describe(kwargs)}"
            # Fed by data (no input requires grad): a NaN in its parameter gradients does
            # not flow on to other layers, so the tripwire watches it separately.
            data_fed = bool(
                self._layer_params[layer]
                and grad_mode
                and not any(t.requires_grad for t in tensors_in((args, kwargs), []))
            )
            if x is not None:
                meta = (describe(output), str(x.dtype)[6:], str(x.device))
            else:
                meta = (describe(output), "", "")
            cached = (key, inputs, data_fed, meta)
            self._meta_cache[layer] = cached
        _, sample.in_shapes[layer], data_fed, sample.meta[layer] = cached
        if data_fed:
            sample.data_fed.add(layer)

    def _record(self, sample: _Sample, layer: int, args: Any, kwargs: Any, output: Any) -> None:
        # The hot path of a sampled step: once per module call. Keep it lean: in context (the
        # step's data having evicted the interpreter's caches) each line costs ~1 µs.
        x = output if type(output) is torch.Tensor else _primary(output)
        grad_mode = torch.is_grad_enabled()
        if layer not in sample.meta:
            self._describe(sample, layer, x, args, kwargs, output, grad_mode)
        if x is None or type(x) is not torch.Tensor or not x.is_floating_point():
            sample.records.append((layer, -1, 0))
            return
        numel = x.numel()
        if not numel:
            sample.records.append((layer, -1, 0))
            return
        # The version counter tells an output changed in place since it was measured (an
        # inference tensor has none: -1, never matched).
        version = x._version if grad_mode or not x.is_inference() else -1
        last = sample.last_out
        if last is not None and last[0] is x and last[2] == version >= 0:
            # A container returning its last child's output (Sequential): same numbers. Not
            # an in-place module (ReLU(inplace=True)): it changed them, its version tells.
            sample.records.append((layer, last[1], numel))
            return
        slot = sample.slots
        sample.slots = slot + 1
        sample.records.append((layer, slot, numel))
        sample.last_out = (x, slot, version)
        count_zeros = sample.count_all or (sample.count_dead and layer in self._zero_layers)
        if (
            sample.defer
            and numel <= BATCH_NUMEL
            and (BATCH_ON_CPU or not x.is_cpu)
            and layer not in self._hist_layers
            and layer not in self._eager_layers
        ):
            sample.deferred.append((slot, layer, x.detach(), version, count_zeros))
            sample.ints.append(None)  # replaced by _flush when counted
            sample.deferred_numel += numel
            if sample.deferred_numel > DEFERRED_NUMEL:
                self._flush(sample)
            return
        if grad_mode:
            # Ops under no grad record no autograd graph: cheaper than a detached view of
            # each output (an op of its own). Restored before the hook returns.
            _set_grad_enabled(False)
        try:
            self._measure(sample, layer, slot, x, last, args, kwargs, count_zeros)
        finally:
            if grad_mode:
                _set_grad_enabled(True)
        if sample.forensic and grad_mode:
            self._watch_grads(sample, layer, args, kwargs, output)

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

    def _watch_grads(
        self, sample: _Sample, layer: int, args: Any, kwargs: Any, output: Any
    ) -> None:
        # Forensic steps only: a gradient hook on the module's outputs and inputs, to see in
        # which module's backward a gradient first went non-finite.
        for kind, tensors in (
            ("out", tensors_in(output, [])),
            ("in", tensors_in((args, kwargs), [])),
        ):
            for t in tensors:
                if t.requires_grad and t.is_floating_point():
                    sample.tensor_handles.append(
                        t.register_hook(partial(self._on_tensor_grad, layer, kind))
                    )

    def _on_tensor_grad(self, layer: int, kind: str, grad: torch.Tensor) -> None:
        sample = self._sample
        if sample is None:
            return
        try:
            with torch.no_grad():
                bad = torch.count_nonzero(grad.detach() - grad.detach())
            sample.grad_events.append((GradEvent(layer, kind, id(grad)), bad))
        except Exception as error:
            self._disable(f"gradient hook failed: {error!r}")

    def _on_param_grad(self, index: int, param: torch.Tensor) -> None:
        sample = self._sample
        if sample is None:
            return
        sample.grad_order.append(index)
        if sample.forensic and param.grad is not None:
            try:
                with torch.no_grad():
                    g = param.grad.detach()
                    bad = torch.count_nonzero(g - g)
                event = GradEvent(self._param_layer[index], "param", 0, index)
                sample.grad_events.append((event, bad))
            except Exception as error:
                self._disable(f"parameter hook failed: {error!r}")

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

    # --- internals: the tripwire (every step, CPU only) -----------------------------------------
    #
    # Between samples nothing is measured, yet the first non-finite value must be located before
    # optimizer.step() spreads it into the weights. Per step, on the CPU, a step pre-hook on
    # each optimizer reads the loss scalar the probe holds and sums the gradient of a few small
    # parameters: the smallest of the layer that receives its gradient last (its bias: a NaN
    # gradient anywhere upstream of it reaches it through the matmuls) and of the layers fed by
    # data, whose gradients flow nowhere else (~1 µs each). When one is non-finite the sampler
    # "trips" and replays the step's forward (and backward) there, before the update
    # (replay.py). Without an optimizer (a hand-written update) the watched parameters get
    # post-accumulate hooks instead and the replay waits for the boundary. No hook on the
    # model's output: a tensor hook there costs ~40 µs a step on the benchmark model
    # (measured), most of the 1% budget. On CUDA the tripwire stays off (it would need a device
    # sync each step): the loss check at the boundary and forensic samples do the work, after
    # the update.

    def _set_trip_layers(self, layers: list[int]) -> None:
        """Watch the smallest parameter of each of ``layers`` (its gradient, every step)."""
        wanted: dict[int, torch.nn.Parameter] = {}
        for layer in layers:
            candidates = [
                (p.numel(), i, p)
                for i in self._layer_params[layer]
                if (p := self._params[i]()) is not None and p.requires_grad
            ]
            if candidates:
                _, index, param = min(candidates, key=lambda c: c[:2])
                wanted[index] = param
        self._watched = {index: weakref.ref(param) for index, param in wanted.items()}
        self._hook_watched()

    def _hook_watched(self) -> None:
        """Without an optimizer to hook, the watched parameters get post-accumulate hooks."""
        wanted = {} if self._optimizers else self._watched
        for index in list(self._trip_handles):
            if index not in wanted:
                self._trip_handles.pop(index).remove()
        for index, ref in wanted.items():
            param = ref()
            if index not in self._trip_handles and param is not None:
                self._trip_handles[index] = param.register_post_accumulate_grad_hook(
                    self._on_trip_grad
                )

    def _remove_trip_hooks(self) -> None:
        handles = [*self._trip_handles.values(), *self._opt_hooks]
        self._trip_handles = {}
        self._opt_hooks = []
        for handle in handles:
            if handle is not None:
                try:
                    handle.remove()
                except Exception:
                    log.exception("tuidebug: removing a tripwire hook failed")

    def _armed(self) -> bool:
        return self.forensics is None and self._tripped is None and not self._replaying

    def _on_trip_grad(self, _param: torch.Tensor) -> None:
        # No optimizer known: a watched gradient was just accumulated (its backward is under
        # way, its loss exists). A trip is replayed at the boundary.
        if self._armed() and not self.disabled:
            self._check_tripwire(self._step + 1)

    def _on_optimizer_pre(self, _optimizer: Any, _args: Any, _kwargs: Any) -> None:
        # Right before an update: the step's loss and gradients exist, the weights are intact.
        if self.disabled or self._replaying:
            return
        self._stepped = True
        if self._tripped is None and self.forensics is None:  # _armed(), inlined: every step
            self._check_tripwire(self._step + 1)
        if self._tripped is not None:
            self._replay()
            self.schedule.next_step = 0  # the next boundary plans the next sample

    def _check_tripwire(self, step: int) -> None:
        """Check the loss the probe holds and the watched gradients of ``step`` (the running
        one, or the one just ended at a boundary); trip when non-finite."""
        start = _clock()
        try:
            self._check_watched(step)
        finally:
            self._per_step += _clock() - start

    def _check_watched(self, step: int) -> None:
        try:
            loss = self._loss_source() if self._loss_source is not None else None
            if type(loss) is float:  # the probe reads a CPU loss when its backward starts
                value = loss
            elif isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_cpu:
                value = float(loss)
            else:
                value = 0.0
            if value - value != 0.0:
                self._trip(step, "loss", f"the loss is {value}")
                return
            for ref in self._watched.values():
                param = ref()
                g = param.grad if param is not None else None
                if g is None:
                    continue
                # Summed in float64, so that finite values never overflow into a false trip:
                # by the C kernel (no torch op; tolist() of a 256-element bias costs 45 µs
                # right after the optimizer's sweep, measured), else a small gradient (the
                # watched ones are biases) in Python: cheaper than a sum op and its read-back
                # (~15 µs a step here, measured). The kernel's own checks come first: in
                # context each attribute read costs 1-5 µs (measured).
                total = host_sum(g)
                if total is None:
                    if not g.is_cpu or g.is_sparse:
                        continue
                    if g.dim() == 1 and g.numel() <= _TRIP_TOLIST:
                        total = sum(g.tolist())
                    else:
                        total = float(g.detach().sum())
                if total - total != 0.0:
                    self._trip(step, "gradient", "a parameter gradient is non-finite")
                    return
        except Exception as error:
            self._disable(f"tripwire check failed: {error!r}")

    def _trip(self, step: int, kind: str, detail: str) -> None:
        """A first non-finite value in ``step``: replay it before the update (at the
        optimizer's pre-hook; at the boundary when there is no optimizer step)."""
        self._tripped = (step, kind, detail)
        self.schedule.next_step = 0  # the boundary takes the slow path (and samples after)

    def _replay(self) -> None:
        """Replay the tripped step's forward (and backward); report the culprit if found."""
        tripped, self._tripped = self._tripped, None
        root, inputs = self._last_root, self._last_inputs
        if tripped is None or root is None or inputs is None or self.forensics is not None:
            return
        step, kind, detail = tripped
        args, kwargs = inputs
        culprit: Culprit | None = None
        self._replaying = True
        start = time.perf_counter()
        try:
            with preserved(root, self._last_rng):
                records = replay_forward(root, args, kwargs, self._index)
                param_bad = {
                    layer: True
                    for layer in {r.layer for r in records}
                    if any(
                        (p := self._params[i]()) is not None
                        and not bool(torch.isfinite(p.detach()).all())
                        for i in self._layer_params[layer]
                    )
                }
                culprit = locate_forward(
                    [r.layer for r in records],
                    [r.out_bad for r in records],
                    [r.in_bad for r in records],
                    param_bad,
                )
                # A non-finite loss with a finite forward came from the loss computation:
                # replaying the model's backward would not find where. A gradient that went
                # non-finite is looked for in a replay of the model's backward, from a gradient
                # of ones at its output (the real one is gone with the graph; keeping it would
                # cost a hook on every step's output, ~40 µs, measured): a NaN born in a
                # backward (sqrt at 0, a custom Function) is born from that gradient too.
                if culprit is None and kind == "gradient":
                    param_layer = {
                        id(p): self._param_layer[i]
                        for i, ref in enumerate(self._params)
                        if (p := ref()) is not None
                    }
                    events, bad_params = replay_backward(
                        root, args, kwargs, None, self._index, param_layer
                    )
                    culprit = locate_backward(events)
                    if culprit is None and bad_params:
                        layer, name = bad_params[0]
                        culprit = Culprit(
                            layer, "backward", f"its backward made a non-finite gradient ({name})"
                        )
        except Exception:
            log.exception("tuidebug: replaying the step to locate a non-finite value failed")
            culprit = None
        finally:
            self._replaying = False
        self._cost += time.perf_counter() - start
        if culprit is None:
            # Not reproduced (state outside tensors: a counter, a cache): the loss check at the
            # boundary and forensic samples take over; say so in their report.
            self._replay_note = (
                f"; a replay of step {step}'s forward and backward was finite "
                "(Python-side module state?)"
            )
            return
        culprit.detail = f"{culprit.detail} ({detail}; found by replaying step {step})"
        self._freeze(step, culprit.source)
        forensics = self.forensics
        assert forensics is not None
        forensics.layer = culprit.layer
        forensics.name = self._layer_label(culprit.layer)
        forensics.detail = culprit.detail
        forensics.located = True
        forensics.found_step = step
        self._forensic_left = 0
        self._pause_pending = self.pause_on_nonfinite
        self._send(
            NonFinite(
                rank=self.rank,
                step=step,
                source=culprit.source,
                layer=culprit.layer,
                name=forensics.name,
                detail=culprit.detail,
                located=True,
                found_step=step,
                paused=self.pause_on_nonfinite,
            )
        )

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
