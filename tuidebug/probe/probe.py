"""The live probe: finds step boundaries, reads the loss and scalars, reports them.

Step boundary, in order of preference (see docs/design.md):
1. ``dbg.step()`` of the hook object: once a script calls ``tuidebug.attach``, only its
   ``step()`` calls count;
2. an optimizer's ``step`` (torch's global optimizer step hook);
3. the ``backward`` of a scalar, for loops that update weights by hand. Such a boundary is only
   known to be one when the *next* backward starts without an optimizer step in between, so
   step N is reported when backward N+1 begins (or when the script ends).

The loss is the scalar passed to ``backward`` (the mean of them, when gradients are accumulated
over several backwards) unless ``dbg.step(loss=...)`` names it.

Rules: nothing here raises into the script (a failing probe disables itself and says so once),
nothing here runs in a forked child (DataLoader workers inherit the probe but must not use it),
and reading a CUDA value never waits on the device: the copy is started without blocking and
the step's point is sent once the copy has landed, a step or so later.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tuidebug.probe.amp import SCALE, SKIPPED
from tuidebug.probe.compiled import CompiledModules, unwrap
from tuidebug.probe.gate import Gate
from tuidebug.probe.hook_api import Hook
from tuidebug.probe.observer import Observer
from tuidebug.wire.messages import (
    Boundary,
    Command,
    Message,
    ModelSeen,
    OptimizerSeen,
    ScriptError,
    StepPoint,
)

if TYPE_CHECKING:
    import torch

    from tuidebug.probe.auto import AutoHooks
    from tuidebug.probe.link import Link
    from tuidebug.probe.phases import PhaseClock

log = logging.getLogger("tuidebug.probe")

F = TypeVar("F", bound=Callable[..., Any])

# The current pid, kept up to date across fork without a getpid() call per hook.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
MAX_PENDING_LOSSES = 1024  # backwards between two boundaries (gradient accumulation) kept
# Before the first boundary, with an optimizer alive: this many backwards and still no step()
# means the optimizer is not the one training (the script updates by hand): each backward
# ends a step from then on.
MAX_FIRST_ACCUMULATION = 256
_clock = time.perf_counter


def _leaves(loss: Any) -> set[int]:
    """The ids of the tensors a backward of ``loss`` accumulates gradients into (its graph's
    leaves: the parameters it trains)."""
    found: set[int] = set()
    seen: set[int] = set()
    todo = [getattr(loss, "grad_fn", None)]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad
        if variable is not None:
            found.add(id(variable))
        todo.extend(next_node for next_node, _ in getattr(node, "next_functions", ()))
    return found


def _trains_any(optimizer: Any, leaves: set[int]) -> bool:
    """Some parameter of ``optimizer`` is one of ``leaves``."""
    try:
        return any(id(p) in leaves for group in optimizer.param_groups for p in group["params"])
    except Exception:  # a half-built or exotic optimizer: not the one training
        return False


def guarded(method: F) -> F:
    """Run a probe entry point so that it can never raise into, or run in a fork of, the run."""

    @functools.wraps(method)
    def wrapper(self: Probe, *args: Any, **kwargs: Any) -> Any:
        if self.disabled or _pid[0] != self.pid:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # the run matters more than the probe
            self.disable(f"{method.__name__} failed: {error!r}")
            return None

    return wrapper  # type: ignore[return-value]


class LiveHook(Hook):
    """The hook object handed to the script while a probe is live."""

    active = True

    def __init__(self, probe: Probe) -> None:
        self._probe = probe

    def step(self, loss: Any = None, **scalars: Any) -> None:
        """Mark a step boundary, logging ``loss`` and any named scalars (tensors or numbers)."""
        self._probe.on_hook_step(loss, scalars)

    def watch(self, *objects: Any) -> None:
        """Add models or optimizers for the probe to follow."""
        self._probe.follow(objects, {})

    def detach(self) -> None:
        """Stop following the run: remove every hook the probe installed."""
        self._probe.remove_hooks()


class _Deferred:
    """A step's point whose tensor values are still being copied from the device."""

    __slots__ = ("event", "host", "keys", "point")

    def __init__(self, point: StepPoint, keys: list[str], host: Any, event: Any) -> None:
        self.point = point
        self.keys = keys
        self.host = host
        self.event = event

    def ready(self) -> bool:
        return bool(self.event.query())

    def resolve(self) -> StepPoint:
        values = self.host.tolist()
        for key, value in zip(self.keys, values, strict=False):
            if key == "\0loss":
                self.point.loss = float(value)
            else:
                self.point.scalars[key] = float(value)
        return self.point


class Probe:
    """The probe of one training process (one rank)."""

    def __init__(self, link: Link | None, rank: int = 0, world_size: int = 1) -> None:
        self.link = link
        self.rank = rank
        self.world_size = world_size
        self.pid = os.getpid()
        self.step = 0
        self.source: str | None = None  # "hook", "optimizer" or "backward" once known
        self._optimizer_alive: bool | None = None  # _optimizer_will_step's one look, when made
        self.disabled = False
        self.disabled_reason = ""
        # The scalars passed to backward this step: a float for a CPU loss (read at once: it
        # costs less to keep and to read back than a detached tensor, ~20 µs a step in context),
        # a detached tensor for a device loss (read at the boundary without a sync).
        self._pending_losses: list[float | torch.Tensor] = []
        self._deferred: deque[_Deferred] = deque()
        self._models: dict[int, tuple[str, weakref.ref[Any]]] = {}
        self._optimizers: dict[int, weakref.ref[Any]] = {}
        self._hook = LiveHook(self)
        self.gate = Gate(self)
        self.observers: list[Observer] = []
        self._auto: AutoHooks | None = None
        self._warned: set[str] = set()
        self._backward_time = 0.0  # seconds on_backward spent since the last boundary
        self.phases: PhaseClock | None = None
        """The step-time breakdown (set by probe/extensions/phases.py): the probe hands it the
        clock readings it makes anyway at backward, optimizer step and boundary."""
        self.boundary_time = 0.0
        """Seconds the probe itself spent on the step that just ended (its backward and
        boundary work, up to the observers): the layer sampler's budget covers it too."""
        self.compiled = CompiledModules()
        """The models the script compiled (compiled.py; the auto hooks note them)."""
        # Mixed precision (amp.py): the last scaler.scale(loss) (scaled, loss) until its
        # backward; the scalers seen; the amp scalars of the step under way (the scale its
        # gradients were scaled by, skipped or not); whether scaler.step is running and
        # whether it called optimizer.step.
        self._scaled: tuple[Any, Any] | None = None
        self._scalers: dict[int, weakref.ref[Any]] = {}
        self._amp: dict[str, Any] | None = None
        self._in_scaler = False
        self._scaler_stepped = False
        # The loss a framework's backward wrapper was given while it runs (set_given_loss):
        # what its backward reports, not the scaled copy it backpropagates.
        self._given_loss: Any = None

    # --- setup --------------------------------------------------------------------------------

    def install_auto_hooks(self) -> None:
        """Follow a script that never heard of tuidebug, through torch's global hooks."""
        from tuidebug.probe.auto import AutoHooks  # imports torch: only when a run needs it

        self._auto = AutoHooks(self)

    def remove_hooks(self) -> None:
        """Remove every hook and patch the probe installed (idempotent)."""
        if self._auto is not None:
            self._auto.remove()
            self._auto = None
        observers, self.observers = self.observers, []
        for observer in observers:
            try:
                observer.close()
            except Exception:  # one observer's failure must not keep the others' hooks
                log.exception("tuidebug: closing %s failed", type(observer).__name__)

    def models(self) -> dict[str, Any]:
        """The live models the probe follows, by name."""
        found = {}
        for name, ref in list(self._models.values()):
            module = ref()
            if module is not None:
                found[name] = module
        return found

    def current_loss(self) -> Any:
        """The scalar whose ``backward`` is running or ran last this step, or None: a float
        when it was on the CPU, else a tensor on its device."""
        return self._pending_losses[-1] if self._pending_losses else None

    def optimizers(self) -> list[Any]:
        """The live optimizers the probe has seen."""
        return [o for o in (ref() for ref in list(self._optimizers.values())) if o is not None]

    def scalers(self) -> list[Any]:
        """The live grad scalers the probe has seen (through ``scale`` or ``step``)."""
        return [s for s in (ref() for ref in list(self._scalers.values())) if s is not None]

    def add_observer(self, observer: Observer) -> None:
        """Add an extension's observer; it hears of the models and optimizers seen so far."""
        self.observers.append(observer)
        for name, ref in list(self._models.values()):
            module = ref()
            if module is not None:
                observer.on_model(name, module)
        for ref in list(self._optimizers.values()):
            optimizer = ref()
            if optimizer is not None:
                observer.on_optimizer(optimizer)

    def attach(self, *objects: Any, **named: Any) -> Hook:
        """``tuidebug.attach``: follow these objects and make ``dbg.step()`` the boundary."""
        self.follow(objects, named)
        self._set_source("hook", "tuidebug.attach(...).step()")
        return self._hook

    @guarded
    def follow(self, objects: tuple[Any, ...], named: dict[str, Any]) -> None:
        """Start following models and optimizers given by the script."""
        import torch

        items = [(None, obj) for obj in objects] + list(named.items())
        for name, obj in items:
            if isinstance(obj, torch.nn.Module):
                self._see_model(obj, name)
            elif isinstance(obj, torch.optim.Optimizer):
                self.on_optimizer_seen(obj)

    # --- events from the script ----------------------------------------------------------------

    @guarded
    def on_backward(self, tensor: Any) -> None:
        """A ``backward`` is about to run on ``tensor`` (called by the auto hooks)."""
        import torch

        start = _clock()
        if not isinstance(tensor, torch.Tensor) or tensor.numel() != 1:
            if self.phases is not None:
                self.phases.backward_begin(start)
            return
        scaled = self._scaled
        if scaled is not None:  # scaler.scale(loss).backward(): the loss is the unscaled one
            self._scaled = None
            if tensor is scaled[0]:
                tensor = scaled[1]
        given = self._given_loss
        if isinstance(given, torch.Tensor) and given.numel() == 1:
            tensor = given  # accelerator.backward(loss) backpropagates loss / accumulation steps
        if (
            self.source in (None, "backward")
            and self._pending_losses
            and not (self.source is None and self._optimizer_will_step(tensor))
        ):
            # A second backward with no optimizer step in between: the previous one ended a step.
            self._set_source("backward", "backward() of a scalar (no optimizer step seen)")
            self._boundary(None, {}, start)
            start = _clock()
        if len(self._pending_losses) < MAX_PENDING_LOSSES:
            # item(): float() of a tensor that requires grad warns (torch 2.13)
            self._pending_losses.append(tensor.item() if tensor.is_cpu else tensor.detach())
        now = _clock()
        self._backward_time += now - start
        if self.phases is not None:  # the backward phase starts after the probe's own work
            self.phases.backward_begin(now)

    def _optimizer_will_step(self, loss: Any) -> bool:
        """Before any boundary, a second backward with no optimizer step in between: gradient
        accumulation (or LBFGS's closure) when an optimizer exists over parameters that this
        ``loss`` trains, whose ``step()`` will end the step; a loop without one (hand-written
        updates) when none does, and each backward ends a step. Looked up once, on the run's
        first second backward: a walk of the loss's graph and a heap scan (the optimizers are
        seen at their first step() only)."""
        if len(self._pending_losses) >= MAX_FIRST_ACCUMULATION:
            return False
        if self._optimizer_alive is None:
            import torch

            leaves = _leaves(loss)
            self._optimizer_alive = any(
                _trains_any(ref(), leaves) for ref in self._optimizers.values()
            ) or any(
                issubclass(type(obj), torch.optim.Optimizer) and _trains_any(obj, leaves)
                for obj in gc.get_objects()
            )
        return self._optimizer_alive

    @guarded
    def on_backward_end(self) -> None:
        """``torch.autograd.backward`` returned (called by the auto hooks' wrapper)."""
        if self.phases is not None:
            self.phases.backward_end()

    @guarded
    def on_optimizer_step(self, optimizer: Any) -> None:
        """An optimizer finished a ``step`` (called by torch's global optimizer hook)."""
        start = _clock()
        if self.phases is not None:  # this hook's first clock reading ends the optimizer phase
            self.phases.optimizer_end(start)
        if self._in_scaler:  # GradScaler.step applied the update (amp.py)
            self._scaler_stepped = True
        if id(optimizer) not in self._optimizers:
            self.on_optimizer_seen(optimizer)
        if self.source == "hook":
            return
        if self.source != "optimizer":
            self._set_source("optimizer", f"{type(optimizer).__name__}.step()")
        self._boundary(None, {}, start)

    @guarded
    def on_scaled(self, scaler: Any, loss: Any, scaled: Any) -> None:
        """``scaler.scale(loss)`` returned ``scaled`` (amp.py): its backward reports ``loss``."""
        self._note_scaler(scaler)
        numel = getattr(scaled, "numel", None)
        if numel is not None and numel() == 1:
            self._scaled = (scaled, loss)

    @guarded
    def on_scaler_step(self, scaler: Any, optimizer: Any, begin: bool) -> None:
        """``scaler.step(optimizer)`` begins or ends (amp.py). A step it skipped (no
        ``optimizer.step()`` came) ends here, flagged ``amp_skipped``."""
        if begin:
            self._note_scaler(scaler)
            self._in_scaler = True
            self._scaler_stepped = False
            if not getattr(scaler, "_enabled", True):
                return  # GradScaler(enabled=False): a plain step
            scale = getattr(scaler, "_scale", None)  # a tensor: read without a device sync
            self._amp = {SKIPPED: 0.0} if scale is None else {SCALE: scale, SKIPPED: 0.0}
            return
        self._in_scaler = False
        if self._scaler_stepped or self._amp is None:
            return  # the optimizer's step ended the step, with the amp scalars
        self._amp[SKIPPED] = 1.0
        if self.source == "hook":
            return  # dbg.step() ends it, with them
        start = _clock()
        if self.source != "optimizer":
            self._set_source("optimizer", f"{type(optimizer).__name__}.step()")
        self._boundary(None, {}, start)

    def set_given_loss(self, loss: Any) -> None:
        """A framework's backward wrapper (``integrations/accelerate.py``) was handed ``loss``
        and backpropagates a scaled copy of it (divided by the gradient accumulation steps):
        until ``set_given_loss(None)``, a backward reports ``loss``, the value the script
        computed (a step's loss is then the mean of its micro-batches', as a plain loop's)."""
        self._given_loss = loss

    def expect_source(self, source: str, detail: str) -> None:
        """A framework tells the step boundary before the probe could find it (Accelerate with
        gradient accumulation: micro-batches backpropagate with no optimizer step between them,
        which would otherwise make the first one a step of its own). Kept only while none was
        found yet: a script's own ``dbg.step()`` still wins."""
        if self.source is None:
            self._set_source(source, detail)

    def _note_scaler(self, scaler: Any) -> None:
        if id(scaler) not in self._scalers:
            self._scalers[id(scaler)] = weakref.ref(scaler)

    @guarded
    def on_hook_step(self, loss: Any, scalars: dict[str, Any]) -> None:
        """``dbg.step(loss=..., **scalars)``."""
        start = _clock()
        if self.source != "hook":
            self._set_source("hook", "dbg.step()")
        self._boundary(loss, scalars, start)

    def on_optimizer_seen(self, optimizer: Any) -> None:
        """Remember an optimizer and tell the console about it."""
        self._optimizers[id(optimizer)] = weakref.ref(optimizer)
        for observer in self.observers:
            observer.on_optimizer(optimizer)
        groups = getattr(optimizer, "param_groups", [])
        lr = groups[0].get("lr") if groups else None
        self.send(
            OptimizerSeen(
                rank=self.rank,
                step=self.step,
                class_name=type(optimizer).__name__,
                lr=float(lr) if isinstance(lr, (int, float)) else None,
                param_groups=len(groups),
            )
        )

    def on_models_found(self, modules: list[Any]) -> None:
        """The auto hooks found the script's root modules during the first step."""
        for module in modules:
            self._see_model(module, None)

    @guarded
    def report_error(self, error: BaseException, traceback_text: str, held: bool = False) -> None:
        """The script raised ``error``; send it with the traceback the user sees."""
        self.send(
            ScriptError(
                rank=self.rank,
                step=self.step,
                exc_type=type(error).__name__,
                text=str(error),
                traceback=traceback_text,
                held=held,
            )
        )

    def handle_command(self, command: Command) -> None:
        """A console's command, from the link's I/O thread; the gate runs it at a boundary."""
        self.gate.post(command)

    def finish(self) -> None:
        """The script is over: report the last step and anything still in flight."""
        if self.disabled or os.getpid() != self.pid:
            return
        try:
            if self.source in (None, "backward") and self._pending_losses:
                self._set_source("backward", "backward() of a scalar (no optimizer step seen)")
                self._boundary(None, {}, _clock())
            self._release_deferred(wait=True)
        except Exception as error:
            self.disable(f"finish failed: {error!r}")

    def disable(self, reason: str) -> None:
        """Stop probing for good, say why once, and leave the run alone."""
        if self.disabled:
            return
        self.disabled = True
        self.disabled_reason = reason
        log.warning("tuidebug: the probe stopped (%s); training continues", reason)
        try:
            self.remove_hooks()
        except Exception:  # removing hooks must not turn one failure into two
            log.exception("tuidebug: removing the probe's hooks failed")

    # --- internals -----------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue a message for the supervisor (dropped when there is no link)."""
        if self.link is not None:
            self.link.send(message)

    def _set_source(self, source: str, detail: str) -> None:
        if self.source == source:
            return
        self.source = source
        self.send(Boundary(rank=self.rank, step=self.step, source=source, detail=detail))

    def _see_model(self, module: Any, name: str | None) -> None:
        # torch.compile(model)'s wrapper stays the model the extensions hook: its calls are
        # eager, while a hook on the original module would be inside the compiled region
        # (recompiles, graph breaks: compiled.py). The layer sampler numbers the original's
        # modules; the console shows the original's class.
        inner, entry = unwrap(module)
        if entry is not None:
            self.compiled.note(inner, entry)
            if id(inner) in self._models:
                return
        if id(module) in self._models:
            return
        if name is None:
            name = "model" if not self._models else f"model{len(self._models) + 1}"
        self._models[id(module)] = (name, weakref.ref(module))
        params = list(module.parameters())
        self.send(
            ModelSeen(
                rank=self.rank,
                step=self.step,
                name=name,
                class_name=type(inner).__name__,
                parameters=sum(p.numel() for p in params),
                trainable=sum(p.numel() for p in params if p.requires_grad),
                modules=sum(1 for _ in module.modules()),
            )
        )
        for observer in self.observers:
            observer.on_model(name, module)

    def _boundary(self, loss: Any, scalars: dict[str, Any], start: float) -> None:
        """One step ended (the probe's entry point began at ``start``): number it, read its
        values without a device sync, queue it."""
        self.step += 1
        phases = self.phases
        if phases is not None:  # before the observers: they may read the step's phases
            phases.step_end(self.step, start)
        if self._auto is not None and self.step == 1:
            self._auto.first_step_done(self.optimizers())
        losses, self._pending_losses = self._pending_losses, []
        amp = self._amp
        if amp is not None:  # a mixed-precision step: its scale, skipped or not (amp.py)
            self._amp = None
            scalars = {**amp, **scalars}
        point = StepPoint(self.step, time.time(), None, {})
        on_device: list[tuple[str, Any]] = []
        if loss is None and losses:
            loss = losses[0] if len(losses) == 1 else _mean(losses)
        if type(loss) is float:  # a CPU loss, read when its backward began
            point.loss = loss
        elif loss is not None:
            self._read_value("\0loss", loss, point, on_device)
        for key, value in scalars.items():
            self._read_value(key, value, point, on_device)
        resolved = not on_device
        if on_device:
            self._defer(point, on_device)
        elif self._deferred:
            # Keep the order: this point waits behind the ones still being copied.
            self._deferred.append(_Deferred(point, [], _Done(), _Done()))
        elif self.link is not None:
            self.link.push_point(point)
        if self._deferred:
            self._release_deferred(wait=False)
        if self.observers:
            now = _clock()
            self.boundary_time = now - start + self._backward_time
            self._backward_time = 0.0
            for observer in self.observers:
                reason = observer.on_boundary(self.step, point, now)
                if reason:
                    self.gate.request_pause(reason)
        if self.gate.attention:  # the pause gate's one check per step
            self.gate.at_boundary(point if resolved else None)
        if phases is not None:  # a pause, a save, the probe's own work: no step's time
            phases.step_begin()

    def _read_value(
        self, key: str, value: Any, point: StepPoint, on_device: list[tuple[str, Any]]
    ) -> None:
        number = _host_number(value)
        if number is _ON_DEVICE:
            on_device.append((key, value))
            return
        if number is None:
            if key not in self._warned:
                self._warned.add(key)
                log.warning("tuidebug: %r is not a number or a one-element tensor; skipped", key)
            return
        if key == "\0loss":
            point.loss = float(number)  # type: ignore[arg-type]
        else:
            point.scalars[key] = float(number)  # type: ignore[arg-type]

    def _defer(self, point: StepPoint, on_device: list[tuple[str, Any]]) -> None:
        import torch

        stacked = torch.stack([v.detach().reshape(()).float() for _, v in on_device])
        host = stacked.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._deferred.append(_Deferred(point, [k for k, _ in on_device], host, event))

    def _release_deferred(self, wait: bool) -> None:
        while self._deferred and (wait or self._deferred[0].ready()):
            item = self._deferred.popleft()
            if wait and not isinstance(item.event, _Done):
                item.event.synchronize()
            point = item.resolve()
            if self.link is not None:
                self.link.push_point(point)
            if item.keys:  # a late value: a pause it calls for comes a step or two later
                if self.gate.conditions:
                    self.gate.check_conditions(point)
                for observer in self.observers:
                    reason = observer.on_late_value(point)
                    if reason:
                        self.gate.request_pause(reason)


class _Done:
    """Stands in for a finished CUDA event and an empty host tensor."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None

    def tolist(self) -> list[float]:
        return []


_ON_DEVICE = object()


def _host_number(value: Any) -> float | object | None:
    """A Python float for numbers and CPU scalars, ``_ON_DEVICE`` for device tensors, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    numel = getattr(value, "numel", None)
    if numel is None or numel() != 1:
        return None
    if value.device.type == "cpu":
        return float(value.detach())
    if value.device.type == "meta":
        return None
    return _ON_DEVICE


def _mean(values: list[Any]) -> Any:
    """The mean of losses kept by ``on_backward`` (floats for CPU ones, device tensors): a float
    when all are floats, else a tensor on the device (no sync)."""
    tensors = [v for v in values if not isinstance(v, (int, float))]
    if not tensors:
        return sum(values) / len(values)
    import torch

    device = tensors[0].device
    return torch.stack(
        [
            torch.tensor(float(v), device=device)
            if isinstance(v, (int, float))
            else v.reshape(()).float()
            for v in values
        ]
    ).mean()
