"""Arming a sample and the hooks that run inside forward and backward.

- Every step: ``_on_root_call``, the forward pre-hook of each root model (keeps the batch and,
  when the forward draws random numbers, the CPU RNG state, for forensics).
- A sampled step: ``_arm`` at the boundary before it (the weights' snapshot, the StatBuffer,
  the histogram layers, ONE global module forward hook, parameter hooks while the backward
  order is unknown and on forensic samples); ``_on_forward`` -> ``_record`` per module call
  (shapes, then the statistics: ``_measure`` in the hook or deferred to ``_flush``, both in
  ``measure.py``); gradient hooks on forensic samples. ``_finish`` (``finish.py``) takes the
  hooks down.

``DENSE_INTERVAL`` and ``BATCH_ON_CPU`` are read here, as module globals (tests patch them on
this module).
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.modules import module as _module_globals
from torch.nn.modules.module import register_module_forward_hook

from tuidebug.probe.layers.base import _clock, _Sample, _SamplerState
from tuidebug.probe.layers.shapes import _first_shape, _primary, describe
from tuidebug.probe.nonfinite import GradEvent
from tuidebug.probe.replay import tensors_in
from tuidebug.probe.statbuffer import StatBuffer

if TYPE_CHECKING:
    from torch import nn

DENSE_INTERVAL = 4  # sampling this often or more is "dense": the costly extras are spread out
# Dense sampling spreads the costly extras over a cycle of DENSE_CYCLE samples, never two on
# one sample: the update ratio (a copy of every weight, their norms) on phase 0, exact zeros of
# ReLU-like layers (a slow count on the CPU) on phase DENSE_CYCLE // 2, round-robin histograms
# on phase 2 of every other cycle. Each changes slowly from one step to the next.
DENSE_CYCLE = 8
HISTOGRAM_EVERY = 4  # samples between two round-robin histograms (each costs ~70 µs a tensor)
_set_grad_enabled = torch._C._set_grad_enabled  # what torch.no_grad() calls, without the object
_global_with_kwargs: dict[int, bool] = getattr(
    _module_globals, "_global_forward_hooks_with_kwargs", {}
)
# On an accelerator, outputs up to BATCH_NUMEL elements are measured together at the step's
# end: one stack and four reductions per group of equal shapes instead of four kernel
# launches per module (there the cost of a small op is its launch). On the CPU each output is
# measured in its hook, while it is still in cache: measured on the benchmark model, batching
# there costs more (+400 µs a step) than it saves (in the hook: +300 µs), because re-reading
# outputs that left the cache costs more than the dispatches saved. BATCH_ON_CPU is for tests.
BATCH_NUMEL = 1 << 17
BATCH_ON_CPU = False
DEFERRED_NUMEL = 1 << 22  # deferred elements held at most before measuring them early


class _Hooks(_SamplerState):
    """Arming a sample, and the hooks (training thread, inside forward and backward)."""

    # --- internals: arming ---------------------------------------------------------------------

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
                if self._compiled_any:
                    self._eager_step()
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

    def _remove_forward_hook(self) -> None:
        handle, self._forward_handle = self._forward_handle, None
        if handle is not None:
            # torch's handle forgets the global "with kwargs" flag dict (a small leak per
            # sample): remove its entry ourselves.
            _global_with_kwargs.pop(handle.id, None)
            handle.remove()
        # The hook count is back to what the compiled code was traced with: the compiled
        # models run compiled again, with no recompile (probe/compiled.py).
        self._eager.exit()

    def _eager_step(self) -> None:
        """A sampled step of a run with a compiled model runs eagerly, with the forward hook,
        from here to ``_remove_forward_hook`` (docs/layers.md, "torch.compile")."""
        if self._warning_filter is None:
            # torch.compile(model)'s wrapper warns at each call while a global hook exists
            # (that it would fire for the wrapper too: ours ignores it). The run's output must
            # not carry the probe's doing; the filter goes in close().
            warnings.filterwarnings(
                "ignore",
                message=r"Using `torch.compile\(module\)` when there are global hooks",
                category=UserWarning,
            )
            self._warning_filter = warnings.filters[0]
        self._eager.enter()

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
