"""The :class:`LayerSampler`: its public interface (setup, step boundaries, close), the
boundary's fast path, and the pieces it is made of (see the package docstring).
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from typing import TYPE_CHECKING, Any, cast

import torch

from tuidebug.probe.compiled import unwrap
from tuidebug.probe.layers.base import _NEVER, _Model, log
from tuidebug.probe.layers.finish import _Finishing
from tuidebug.probe.layers.forensics import _Forensics
from tuidebug.probe.layers.hooks import _Hooks
from tuidebug.probe.layers.measure import _Measuring
from tuidebug.probe.layers.shapes import _fmt_module, _shape
from tuidebug.probe.layers.tripwire import _Tripwire
from tuidebug.wire.layer_messages import LayerTable
from tuidebug.wire.messages import Notice

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer

    from tuidebug.wire.messages import Message

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
# Grad-scaler skips in a row that are still the scaler's business: from its default scale
# (2**16) an fp16 overflow is resolved in a few halvings; a NaN born in the model makes it skip
# every step, and past this many the tripwire checks again (probe/amp.py).
SKIP_LIMIT = 16


class LayerSampler(_Hooks, _Measuring, _Finishing, _Tripwire, _Forensics):
    """Per-layer statistics on sampled steps, within a cost budget. See the package docstring.

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
        # torch.compile(model)'s wrapper: the original's modules are the layers (their own
        # names); the every-step hook goes on the wrapper (see below).
        model, wrapper = unwrap(model)
        if wrapper is not None and self._compiled is not None:
            self._compiled.note(model, wrapper)
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
        compiled = wrapper is not None or (
            self._compiled.is_compiled(model)
            if self._compiled is not None
            else getattr(model, "_compiled_call_impl", None) is not None
        )
        entry = self._compiled.entry(model) if compiled and self._compiled is not None else None
        if entry is None:
            entry = wrapper
        hooked = entry if compiled else model
        pre_hook = (
            hooked.register_forward_pre_hook(self._on_root_call, with_kwargs=True)
            if hooked is not None
            else None
        )
        self._models.append(
            _Model(
                name,
                weakref.ref(model),
                base,
                len(names),
                pre_hook,
                compiled,
                weakref.ref(entry) if entry is not None else None,
            )
        )
        if compiled:
            self._compiled_any = True
            if self.schedule.every is None and not self._compiled_off:
                # Statistics need the step run eagerly (hooks inside a compiled region
                # recompile it); an eager step differs from an inductor one in float rounding,
                # so only --stats-every asks for that (docs/layers.md, "torch.compile").
                self._compiled_off = True
                self._send(
                    Notice(
                        level="info",
                        text=f"layers: {name} is compiled (torch.compile): layer statistics "
                        "are off; --stats-every N takes them on every Nth step, run eagerly",
                    )
                )
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
            # The tripwire's check, right before each update (tripwire.py).
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
            if model.compiled:  # the eager wrapper, or nothing (see _add_model)
                root = model.entry() if model.entry is not None else None
            if root is not None and model.pre_hook is None:
                model.pre_hook = root.register_forward_pre_hook(
                    self._on_root_call, with_kwargs=True
                )
        for ref in self._optimizers if not self._opt_hooks else ():  # kept: _remove_trip_hooks
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

    def on_boundary(
        self,
        step: int,
        now: float,
        loss: float | None,
        overhead: float = 0.0,
        skipped: bool = False,
    ) -> bool:
        """Step ``step`` ended. True when the run should pause here (see the package doc).

        ``overhead``: seconds the probe spent on this step outside the sampler (its own
        boundary): the budget covers the whole probe, so samples make room for it.
        ``skipped``: the grad scaler skipped the step's update (inf gradients, probe/amp.py):
        not a non-finite value to report, unless it skips ``SKIP_LIMIT`` steps in a row (a
        real NaN makes it skip every step).
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
        if skipped:
            self._skip_run = self._skip_run + 1 if self._skip_step == step - 1 else 1
            self._skip_step = step
            skipped = self._skip_run < SKIP_LIMIT
            stepped |= skipped  # no tripwire check at this boundary
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
            return self._slow_boundary(step, now, loss, stepped, skipped)
        except Exception as error:
            self._disable(f"on_boundary failed: {error!r}")
            return False

    def _slow_boundary(
        self, step: int, now: float, loss: float | None, stepped: bool, skipped: bool = False
    ) -> bool:
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
            self._sample.scaler_skipped = skipped
            pause |= self._finish(step)
        if loss is not None and loss - loss != 0.0:
            pause |= self._nonfinite_loss(step, loss)
        if self._models and self._sample is None:
            if self._need_plan:
                self._need_plan = False
                self.schedule.first(step)
            # A compiled model in budget mode samples only to locate a non-finite value.
            if step + 1 >= self.schedule.next_step and (
                not self._compiled_off or self._forensic_left > 0
            ):
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
        self._eager.exit()
        if self._warning_filter is not None:
            try:
                cast("list[Any]", warnings.filters).remove(self._warning_filter)
                warnings._filters_mutated()  # type: ignore[attr-defined]
            except ValueError:  # the script reset the filters: nothing of ours is left
                pass
            self._warning_filter = None
        try:
            self._drain(wait=True)
        except Exception:
            log.exception("tuidebug: reading the last layer sample failed")
        self.schedule.next_step = _NEVER

    # --- internals --------------------------------------------------------------------------------

    def _usable(self) -> bool:
        return not self.disabled and os.getpid() == self.pid

    def _send(self, message: Message) -> None:
        self._send_fn(message)

    def stop(self, reason: str) -> None:
        """Stop for good (hooks out, one warning line): the model is not one to sample."""
        self._disable(reason)

    def _disable(self, reason: str) -> None:
        if self.disabled:
            return
        self.disabled = True
        log.warning("tuidebug: layer statistics stopped (%s); training continues", reason)
        self.close()

    def _remove_root_hooks(self) -> None:
        for model in self._models:
            if model.pre_hook is not None:
                try:
                    model.pre_hook.remove()
                except Exception:
                    log.exception("tuidebug: removing a model hook failed")
                model.pre_hook = None
