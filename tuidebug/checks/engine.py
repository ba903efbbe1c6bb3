"""The rules, live in the training process: a probe Observer that samples a few steps.

The engine observes (root-model forwards, losses, boundaries), schedules the windows and runs
the alert lifecycle (once per (rule, place), ``silence``, severities from the config). The
rules' own logic lives in rule groups, by what they watch (``tuidebug/checks/groups/``: losses,
gradients and updates, data, modes and graphs, architecture); the engine calls their hooks
(``groups/base.py``: ``RuleGroup``) and a group reaches the engine only through
``groups.base.Engine`` (``alert``, the live models, the step, ``hook`` for a window's handles).

How to add a rule: its entry in ``rules.py`` (id, severity, title, why, fix) and its logic in
the group that watches what it needs (its id in that group's ``rules``); a new group is one file
in ``groups/`` and one line in ``groups.GROUPS``. The engine does not change.

How it stays cheap (docs/design.md: no sync, no hook on a step it does not sample):
- ``schedule(step)`` is an integer test. Only a *window* (from the boundary before a sampled step
  to the boundary that ends it) carries the costly hooks: ReLU / Linear / Conv / BatchNorm
  modules on some windows, gradient hooks on parameters, the loss functions of
  ``torch.nn.functional`` wrapped, the DataLoader iterator's ``__next__`` timed. Everything is
  installed when the window opens and removed when it closes.
- Every forward of a *root* model (the probe's found models, one call per model call, never per
  layer) is classified, on every step: a pre-hook reads the mode, grad mode and inference mode
  into a ``Forward`` record, a post-hook registers a gradient hook on an output that requires
  grad (so a backward that reaches it marks it trained). Records wait one boundary (their
  backward may come after the boundary that follows them) and are then handed to the groups'
  ``on_settled``: evaluations at epoch ends, in helpers or under ``inference_mode`` are seen,
  sampled step or not (measured: benchmarks/bench_forward_classify.py). For a DataParallel /
  DistributedDataParallel root the mode is its ``.module``'s. With two root models or more,
  the post-hook keeps a weak reference to each model's last output and the pre-hook notes the
  forward that takes it (or a tensor on its storage) as input (``Forward.consumer``): a GAN's
  generator feeding its discriminator. Outside windows, a forward that
  starts with grad off or in eval mode also goes to the groups' ``on_eval_forward`` (the
  dataset rules hash a few of its rows, a bounded number of forwards per step).
- Between windows the only other work is a float test on the loss the probe already has.
- Every entry point is guarded: a failing rule disables the checks (once, with a warning) and
  never raises into the script. The exception is ``max_steps`` (``tuidebug check --steps N``):
  it ends the script with ``SystemExit(0)`` at a boundary, on purpose.

Two patches live as long as the observer: ``warnings.showwarning`` (groups/losses.py: to see
torch's own broadcasting warning; it chains to the original), and ``LRScheduler.__init__``
(groups/gradients.py: to know which schedulers exist). With ``--overfit-batch`` also
``DataLoader.__iter__`` (here). ``close()`` puts every one back, if it is still ours.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.utils.data import DataLoader

from tuidebug.checks.config import ChecksConfig
from tuidebug.checks.groups import GROUPS
from tuidebug.checks.groups.base import Forward, RuleGroup
from tuidebug.checks.rules import RULES
from tuidebug.probe.observer import Observer
from tuidebug.probe.sharding import is_sharded
from tuidebug.wire.check_messages import Alert, ChecksDone
from tuidebug.wire.messages import Message, Notice, StepPoint

log = logging.getLogger("tuidebug.probe")

MAX_ALERTS = 200
# Root-model forwards waiting for their backward: beyond this (a long evaluation loop with no
# boundary), the older ones are settled early, so the records never grow without bound.
MAX_PENDING_FORWARDS = 4096

_grad_enabled = torch.is_grad_enabled
_inference_enabled = torch.is_inference_mode_enabled
_is_compiling = torch.compiler.is_compiling


def _mode_holder(module: nn.Module) -> nn.Module:
    """The module whose ``training`` says the model's mode: a DataParallel / DDP wrapper's
    ``.module`` (``wrapper.module.eval()`` leaves the wrapper's own flag as it was)."""
    if isinstance(module, (DataParallel, DistributedDataParallel)) and isinstance(
        getattr(module, "module", None), nn.Module
    ):
        return module.module
    return module


def _first_tensor(value: Any, depth: int = 0) -> torch.Tensor | None:
    """The first floating tensor in a model's output (tensor, sequence, mapping, ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else None
    if depth > 2:
        return None
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    elif hasattr(value, "logits"):
        items = [value.logits]
    else:
        return None
    for item in items:
        found = _first_tensor(item, depth + 1)
        if found is not None:
            return found
    return None


def _overrides(group: RuleGroup, hook: str) -> bool:
    """Whether ``group`` has its own ``hook`` (the base's are no-ops, not worth a call)."""
    return getattr(type(group), hook) is not getattr(RuleGroup, hook)


class ChecksEngine(Observer):
    """Every rule of ``tuidebug.checks.rules``, through ``groups.GROUPS`` (see the module's
    docstring for the costs and for how to add a rule)."""

    def __init__(
        self,
        send: Callable[[Message], None],
        rank: int,
        config: ChecksConfig,
        *,
        every: int = 50,
        ignore: set[str] | None = None,
        max_steps: int | None = None,
        overfit_batch: bool = False,
        source: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._send = send
        self.rank = rank
        self.config = config
        self.every = max(1, every)
        self.ignore = set(config.ignore) | set(ignore or ())
        self.max_steps = max_steps
        self.overfit_batch = overfit_batch
        self._source = source
        self.step = 0
        self.failed = False
        self.fired: set[tuple[str, str]] = set()
        self._models: dict[str, weakref.ref[nn.Module]] = {}
        # Every root-model forward (see the module's docstring): the hooks, for as long as the
        # engine lives; the records of this step, of the step before, and the forwards running.
        self._root_handles: dict[int, list[Any]] = {}
        self._current: list[Forward] = []
        self._older: list[Forward] = []
        self._running: dict[str, Forward] = {}
        # Per model, the first input tensor of its last training forward (Forward.rerun).
        self._trained_input: dict[str, weakref.ref[torch.Tensor]] = {}
        # Per model, its last finished forward, whose output another root model may take as
        # input (Forward.consumer); kept only once there are two root models.
        self._produced: dict[str, Forward] = {}
        self._optimizers: list[weakref.ref[Any]] = []
        self.sharded = False  # a root model is sharded (_shard_notice)
        # Window state.
        self._armed = False
        self.window_step = 0
        self._handles: list[Any] = []
        self._forwards: list[Forward] = []
        self._window_started = 0.0
        self._original_dl_iter: Any = None
        self.overfit_replayed = 0
        if overfit_batch:
            self._install_overfit()
        self._groups = [group(self) for group in GROUPS]
        # Per forward and per step, only the groups that look: no empty calls on the hot path.
        self._forward_groups = [g for g in self._groups if _overrides(g, "on_forward")]
        self._settled_groups = [g for g in self._groups if _overrides(g, "on_settled")]
        self._eval_groups = [g for g in self._groups if _overrides(g, "on_eval_forward")]
        self._loss_groups = [g for g in self._groups if _overrides(g, "on_loss")]
        # The first window opens now: step 1's loss calls and data waits are seen (models are
        # only known once step 1 ends, so model hooks start with step 2's window).
        self._open_window(1)

    # --- observer hooks -----------------------------------------------------------------------

    def on_model(self, name: str, module: Any) -> None:
        if self.failed:
            return
        try:
            if not self.sharded and is_sharded([module]):
                self._shard_notice(name)
            self._models[name] = weakref.ref(module)
            if id(module) not in self._root_handles:
                self._root_handles[id(module)] = [
                    module.register_forward_pre_hook(
                        self._pre_hook(name, _mode_holder(module)), with_kwargs=True
                    ),
                    module.register_forward_hook(self._post_hook(name)),
                ]
            for group in self._groups:
                group.on_model(name, module)
        except Exception as error:
            self.fail(error)

    def _shard_notice(self, name: str) -> None:
        """A sharded root model: the rules that read parameter values stay off (reading a
        DTensor, a norm or a read-back, may be a collective: one rank's check would hang the
        others, and ``tolist`` refuses it); the loss, data and mode rules still run."""
        self.sharded = True
        self._send(
            Notice(
                rank=self.rank,
                step=self.step,
                level="info",
                text=f"checks: {name} is sharded (FSDP/DTensor): the gradient and weight "
                "rules are off for this run; the loss, data and mode rules run",
            )
        )

    def on_optimizer(self, optimizer: Any) -> None:
        if not self.failed:
            self._optimizers.append(weakref.ref(optimizer))

    def schedule(self, step: int) -> bool:
        """Whether step ``step`` is sampled: the first few, then one in ``every``."""
        return step <= 4 or (step - 1) % self.every == 0

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        if not self.failed:
            try:
                self.step = step
                if point.loss is not None:
                    self._loss(step, point.loss)
                if self._armed:
                    self._close_window(step)
                self._settle(self._older)
                self._older, self._current = self._current, []
                if self.schedule(step + 1):
                    self._open_window(step + 1)
            except Exception as error:
                self.fail(error)
        if self.max_steps is not None and step >= self.max_steps:
            self._stop(f"stopped after {step} steps (--steps {self.max_steps})")
        return None

    def on_late_value(self, point: StepPoint) -> str | None:
        if not self.failed and point.loss is not None:
            try:
                self._loss(point.step, point.loss)
            except Exception as error:
                self.fail(error)
        return None

    def close(self) -> None:
        """Evaluate what the end of the run tells, then remove every hook and patch."""
        try:
            if not self.failed:
                self._finish_rules()
        except Exception as error:
            log.warning("tuidebug: checks failed at the end of the run: %r", error)
        self._remove_all()

    # --- plumbing ------------------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """A rule broke: say so once, remove every hook, and leave the run alone."""
        if self.failed:
            return
        self.failed = True
        log.warning("tuidebug: the checks stopped (%r); training continues", error)
        self._remove_all()

    def _remove_all(self) -> None:
        for handles in self._root_handles.values():
            for handle in handles:
                handle.remove()
        self._root_handles = {}
        self._current, self._older, self._running = [], [], {}
        self._trained_input = {}
        self._produced = {}
        self._disarm()
        for group in self._groups:
            group.on_remove()
        if self._original_dl_iter is not None:
            if DataLoader.__iter__ is self._patched_dl_iter:
                DataLoader.__iter__ = self._original_dl_iter  # type: ignore[method-assign]
            self._original_dl_iter = None

    def _stop(self, reason: str) -> None:
        """``--steps N`` reached: evaluate the end-of-run rules and end the script cleanly."""
        # When boundaries are backward() calls, this one is the start of the next step's
        # backward, which never runs: that step's forward (since the previous boundary) is cut
        # short, no evaluation. So is a forward that fed another root model: its backward comes
        # through that model, after this boundary too (a GAN's generator, backpropagated after
        # the discriminator's own step: pytorch/examples' dcgan, tests/checks/corpus).
        cut = self.source() == "backward"
        self._older = [
            r
            for r in self._older
            if not (r.requires_grad and not r.got_grad and (cut or r.consumer))
        ]
        self.close()
        self._send(ChecksDone(rank=self.rank, step=self.step, reason=reason))
        raise SystemExit(0)

    def alert(
        self, rule: str, message: str, place: str = "", layer: str = "", evidence: str = ""
    ) -> None:
        """Send an alert once per (rule, place), unless the rule is silenced."""
        if rule in self.ignore or len(self.fired) >= MAX_ALERTS:
            return
        key = (rule, place)
        if key in self.fired:
            return
        self.fired.add(key)
        spec = RULES[rule]
        self._send(
            Alert(
                rank=self.rank,
                step=self.step,
                rule=rule,
                severity=self.config.severity(rule, spec.severity),
                message=message,
                why=spec.why,
                fix=spec.fix,
                place=place,
                layer=layer,
                evidence=evidence,
            )
        )

    def silence(self, rule: str) -> None:
        self.ignore.add(rule)

    def hook(self, handle: Any) -> None:
        """A hook handle of the open window: removed when the window closes."""
        self._handles.append(handle)

    def send(self, message: Message) -> None:
        self._send(message)

    def source(self) -> str | None:
        """How the probe finds step boundaries: "hook", "optimizer" or "backward" once known."""
        return self._source()

    def models_live(self) -> dict[str, nn.Module]:
        return {name: m for name, ref in self._models.items() if (m := ref()) is not None}

    def optimizers_live(self) -> list[Any]:
        return [o for o in (ref() for ref in self._optimizers) if o is not None]

    # --- loss (every step: floats only) ---------------------------------------------------------

    def _loss(self, step: int, loss: float) -> None:
        for group in self._loss_groups:
            group.on_loss(step, loss)

    # --- windows -------------------------------------------------------------------------------

    def _open_window(self, step: int) -> None:
        self._armed = True
        self.window_step = step
        self._forwards = []
        self._window_started = time.perf_counter()
        models = self.models_live()
        for group in self._groups:
            group.on_window_open(step, models)

    def _disarm(self) -> None:
        self._armed = False
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for group in self._groups:
            group.on_disarm()

    def _close_window(self, step: int) -> None:
        elapsed = time.perf_counter() - self._window_started
        forwards = self._forwards
        self._disarm()
        self._check_forwards(forwards, final=False)
        for group in self._groups:
            group.on_window_close(step, elapsed)

    # --- the root models' hooks (every forward) ------------------------------------------------

    def _pre_hook(self, name: str, holder: nn.Module) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            # Inside a compiled region dynamo would trace this (model.compile() compiles the
            # hooks too): the compiled call goes unclassified.
            if self.failed or _is_compiling():
                return
            try:
                record = Forward(
                    name, holder.training, _grad_enabled(), _inference_enabled(), self.step + 1
                )
                self._running[name] = record
                first = args[0] if args else next(iter(kwargs.values()), None)
                if isinstance(first, torch.Tensor):
                    if record.training and record.grad_enabled:
                        self._trained_input[name] = weakref.ref(first)
                    else:
                        trained = self._trained_input.get(name)
                        record.rerun = trained is not None and trained() is first
                    for other, produced in self._produced.items():
                        out = produced.output() if produced.output is not None else None
                        # Live tensors with one data pointer share storage (fake.detach()).
                        if other != name and out is not None and out.data_ptr() == first.data_ptr():
                            produced.consumer = record
                current = self._current
                current.append(record)
                if len(current) > MAX_PENDING_FORWARDS:
                    self._settle(self._older + current[: MAX_PENDING_FORWARDS // 2])
                    self._older, self._current = [], current[MAX_PENDING_FORWARDS // 2 :]
                if self._armed:
                    self._forwards.append(record)
                    for group in self._forward_groups:
                        group.on_forward(record, args, kwargs)
                elif self._eval_groups and not (record.training and record.grad_enabled):
                    # Outside windows, only what looks like an evaluation at its start.
                    for group in self._eval_groups:
                        group.on_eval_forward(record, args, kwargs)
            except Exception as error:
                self.fail(error)

        return hook

    def _post_hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if self.failed or _is_compiling():
                return
            try:
                record = self._running.pop(name, None)
                pipeline = len(self._models) > 1
                if record is None or not (record.grad_enabled or pipeline):
                    return
                tensor = _first_tensor(output)
                if tensor is None:
                    return
                if pipeline and tensor.data_ptr():
                    record.output = weakref.ref(tensor)
                    self._produced[name] = record
                if record.grad_enabled and tensor.requires_grad:
                    record.requires_grad = True
                    tensor.register_hook(record.reached)
            except Exception as error:
                self.fail(error)

        return hook

    def _settle(self, records: list[Forward]) -> None:
        if records:
            for group in self._settled_groups:
                group.on_settled(records)

    # --- --overfit-batch -------------------------------------------------------------------------

    def _install_overfit(self) -> None:
        """``--overfit-batch``: each DataLoader yields its first batch, as often as it would."""
        original = DataLoader.__iter__
        engine = self
        cache: dict[int, Any] = {}

        def replay_iter(loader: Any) -> Any:
            inner = original(loader)
            try:
                length: int | None = len(loader)
            except TypeError:
                length = None
            return _Replay(loader, inner, cache, length, engine)

        self._original_dl_iter = original
        self._patched_dl_iter = replay_iter
        DataLoader.__iter__ = replay_iter  # type: ignore[method-assign]

    # --- the groups judge, when a window closes or the run ends --------------------------------

    def _check_forwards(self, forwards: list[Forward], final: bool) -> None:
        for group in self._groups:
            group.on_forwards(forwards, final)

    def _finish_rules(self) -> None:
        """The end of the run (or of ``--steps``): the last window, and the overfit verdict."""
        if self._armed:
            forwards = self._forwards
            self._disarm()
            self._check_forwards(forwards, final=True)
        self._settle(self._older + self._current)
        self._older, self._current = [], []
        for group in self._groups:
            group.on_finish()


class _Replay:
    """A DataLoader iterator that yields the loader's first batch again, as often as it would."""

    def __init__(
        self,
        loader: Any,
        inner: Any,
        cache: dict[int, Any],
        length: int | None,
        engine: ChecksEngine,
    ) -> None:
        self._loader = weakref.ref(loader)
        self._inner = inner
        self._cache = cache
        self._key = id(loader)
        self._left = length
        self._engine = engine

    def __iter__(self) -> _Replay:
        return self

    def __next__(self) -> Any:
        if self._left is not None:
            if self._left <= 0:
                raise StopIteration
            self._left -= 1
            if self._key not in self._cache:
                self._cache[self._key] = next(self._inner)
        else:
            batch = next(self._inner)  # the loader's own length decides when the epoch ends
            self._cache.setdefault(self._key, batch)
        self._engine.overfit_replayed += 1
        return self._cache[self._key]

    def __len__(self) -> int:
        return self._left or 0
