"""The bottom of the layer sampler's package: what every piece shares.

- ``_Sample``: what the hooks of one sampled step collect, until :meth:`_finish` reads it.
- ``_Model``: a followed root model and its forward pre-hook.
- ``_SamplerState``: the sampler's state (its ``__init__``: every attribute the pieces read,
  with what it means), and, for the type checker only, the few methods one piece calls in
  another (the small interface that keeps the package's imports a DAG: no mixin imports
  another, they all import this module).
- The constants more than one module reads. A constant read by one module lives there (the
  tests' knobs ``DENSE_INTERVAL`` and ``BATCH_ON_CPU`` in ``hooks.py``, where they are read).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from tuidebug.probe.compiled import EagerStance
from tuidebug.probe.schedule import Schedule

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer
    from torch.utils.hooks import RemovableHandle

    from tuidebug.probe.compiled import CompiledModules
    from tuidebug.probe.nonfinite import Culprit, Forensics, GradEvent
    from tuidebug.probe.statbuffer import StatBuffer
    from tuidebug.wire.messages import Message

log = logging.getLogger("tuidebug.probe")

HISTOGRAM_LAYERS = 1  # layers that get histograms, round robin (+ the focused one, every sample)
_NEVER = 1 << 62
_clock = time.perf_counter


@dataclasses.dataclass
class _Model:
    name: str
    root: weakref.ref[nn.Module]
    base: int
    count: int
    pre_hook: RemovableHandle | None
    compiled: bool = False
    """Compiled by the script: its every-step hook is on ``entry`` (the eager wrapper of
    ``torch.compile(model)``) or nowhere (``model.compile()``): a hook inside the compiled
    region would recompile it (probe/compiled.py)."""
    entry: weakref.ref[nn.Module] | None = None


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
        "scaler_skipped",
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
        # The grad scaler skipped this step (amp.py): its inf gradients are the scaler's
        # business, not a NaN to locate.
        self.scaler_skipped = False
        self.grad_order: list[int] = []  # parameter indices in backward order
        self.grad_events: list[tuple[GradEvent, torch.Tensor | None]] = []
        self.tensor_handles: list[Any] = []
        self.data_fed: set[int] = set()  # layers with parameters whose inputs need no grad


class _SamplerState:
    """The state of a :class:`~tuidebug.probe.layers.sampler.LayerSampler`; its ``__init__``
    is the sampler's (its arguments are documented there). Each piece of the sampler (the
    mixins of ``hooks.py``, ``measure.py``, ``finish.py``, ``tripwire.py``, ``forensics.py``)
    derives from this class, so that ``self.x`` reads one instance attribute as before the
    split: no indirection on the every-step path."""

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
        compiled: CompiledModules | None = None,
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
        # The tripwire (tripwire.py): CPU only, armed until the first non-finite value.
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
        self._in_optimizer_hook = False  # inside _on_optimizer_pre (tripwire.py)
        self._stepped = True  # an optimizer stepped since the last boundary (or none is known)
        self._replaying = False
        self._pause_pending = False
        self._replay_note = ""
        # torch.compile (probe/compiled.py): the script's compiled models; whether a followed
        # model is compiled; whether samples are off for that (budget mode); the eager stance
        # of sampled steps and replays.
        self._compiled = compiled
        self._compiled_any = False
        self._compiled_off = False
        self._eager = EagerStance()
        self._warning_filter: tuple[Any, ...] | None = None
        # Mixed precision (probe/amp.py): the last step the grad scaler skipped, and how many
        # skipped in a row up to it.
        self._skip_step = -1
        self._skip_run = 0

    if TYPE_CHECKING:
        # The methods one piece calls in another, declared for the type checker only (the
        # definitions are in the module named; LayerSampler inherits them all).

        def _send(self, message: Message) -> None: ...  # sampler.py

        def _disable(self, reason: str) -> None: ...  # sampler.py

        def _remove_step_hooks(self, keep_forward: bool = False) -> None: ...  # hooks.py

        def _measure(  # measure.py
            self,
            sample: _Sample,
            layer: int,
            slot: int,
            d: torch.Tensor,
            last: tuple[torch.Tensor, int, int] | None,
            args: Any,
            kwargs: Any,
            count_zeros: bool,
        ) -> None: ...

        def _flush(self, sample: _Sample) -> None: ...  # measure.py

        def _set_trip_layers(self, layers: list[int]) -> None: ...  # tripwire.py

        def _layer_label(self, layer: int) -> str: ...  # forensics.py

        def _freeze(self, step: int, source: str) -> Forensics: ...  # forensics.py

        def _report(self, step: int, culprit: Culprit | None, located: bool) -> bool: ...
