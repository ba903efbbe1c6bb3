"""The tripwire: an every-step check (CPU only) that catches the first non-finite value before
``optimizer.step()`` spreads it, and the replay of that step that locates it. The class's
opening comment says how, and what it costs.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch

from tuidebug.probe.layers.base import _clock, _SamplerState, log
from tuidebug.probe.nonfinite import Culprit, locate_backward, locate_forward
from tuidebug.probe.replay import preserved, replay_backward, replay_forward
from tuidebug.probe.statbuffer import host_sum
from tuidebug.wire.layer_messages import NonFinite

_TRIP_TOLIST = 4096  # a 1-d gradient up to this long is summed in Python by the tripwire


class _Tripwire(_SamplerState):
    """The every-step tripwire and its replay."""

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
        handles = [*self._trip_handles.values()]
        self._trip_handles = {}
        # torch iterates the optimizer's pre-hook dict while our hook runs: removing an entry
        # then would raise "OrderedDict mutated during iteration" into the script's
        # optimizer.step() whenever a hook follows ours. Ours stay, inert (the sampler is
        # disabled or suspended), until the next removal outside the hook (close()).
        if not self._in_optimizer_hook:
            handles += self._opt_hooks
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
        self._in_optimizer_hook = True
        try:
            if self._tripped is None and self.forensics is None:  # _armed(), inlined
                self._check_tripwire(self._step + 1)
            if self._tripped is not None:
                self._replay()
                self.schedule.next_step = 0  # the next boundary plans the next sample
        finally:
            self._in_optimizer_hook = False

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
        # A compiled model is replayed eagerly: the replay's hooks inside its compiled region
        # would recompile it (probe/compiled.py).
        eager = self._compiled_any and not self._eager.active
        if eager:
            self._eager.enter()
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
            if eager:
                self._eager.exit()
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
