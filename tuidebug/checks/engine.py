"""The rules, live in the training process: a probe Observer that samples a few steps.

How it stays cheap (docs/design.md: no sync, no hook on a step it does not sample):
- ``schedule(step)`` is an integer test. Only a *window* (from the boundary before a sampled step
  to the boundary that ends it) carries hooks: forward hooks on the root models (and ReLU /
  Linear / Conv / BatchNorm modules on some windows), gradient hooks on parameters, the loss
  functions of ``torch.nn.functional`` wrapped, the DataLoader iterator's ``__next__`` timed.
  Everything is installed when the window opens and removed when it closes.
- Between windows the only work is a float test on the loss the probe already has.
- Every entry point is guarded: a failing rule disables the checks (once, with a warning) and
  never raises into the script. The exception is ``max_steps`` (``tuidebug check --steps N``):
  it ends the script with ``SystemExit(0)`` at a boundary, on purpose.

Two patches live as long as the observer: ``warnings.showwarning`` (to see torch's own
broadcasting warning; it chains to the original), and ``LRScheduler.__init__`` (to know which
schedulers exist). With ``--overfit-batch`` also ``DataLoader.__iter__``. ``close()`` puts every
one back, if it is still ours.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tuidebug.checks.config import ChecksConfig
from tuidebug.checks.groups import GROUPS
from tuidebug.checks.groups.base import Forward, RuleGroup
from tuidebug.checks.rules import RULES
from tuidebug.probe.observer import Observer
from tuidebug.wire.check_messages import Alert, ChecksDone, OverfitResult
from tuidebug.wire.messages import Message, StepPoint

if TYPE_CHECKING:
    pass

log = logging.getLogger("tuidebug.probe")

MAX_ALERTS = 200
BROADCAST_WARNING = "will likely lead to incorrect results due to broadcasting"


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


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _overrides(group: RuleGroup, hook: str) -> bool:
    return getattr(type(group), hook) is not getattr(RuleGroup, hook)


class ChecksEngine(Observer):
    """Every rule of ``tuidebug.checks.rules`` (see the module's docstring for the costs)."""

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
        self._optimizers: list[weakref.ref[Any]] = []
        # Losses, as floats: the first few, the recent ones and the lowest.
        self._first_losses: list[float] = []
        self._recent: deque[float] = deque(maxlen=20)
        self._loss_count = 0
        self._min_loss = math.inf
        self._last_loss: float | None = None
        # Window state.
        self._armed = False
        self.window_step = 0
        self._handles: list[Any] = []
        self._patched_f: dict[str, Any] = {}
        self._forwards: list[Forward] = []
        self._window_started = 0.0
        self._initial: tuple[int, float] | None = None  # (classes, loss) of the first CE call
        self._initial_checked = False
        # Long-lived patches.
        self._original_showwarning = warnings.showwarning
        # A bound method is a new object on each access: keep the one installed, to compare.
        self._showwarning_hook = self._showwarning
        warnings.showwarning = self._showwarning_hook  # type: ignore[assignment]
        self._original_dl_iter: Any = None
        self.overfit_replayed = 0
        if overfit_batch:
            self._install_overfit()
        self._groups = [group(self) for group in GROUPS]
        # Per forward and per step, only the groups that look: no empty calls on the hot path.
        self._forward_groups = [g for g in self._groups if _overrides(g, "on_forward")]
        # The first window opens now: step 1's loss calls and data waits are seen (models are
        # only known once step 1 ends, so model hooks start with step 2's window).
        self._open_window(1)

    # --- observer hooks -----------------------------------------------------------------------

    def on_model(self, name: str, module: Any) -> None:
        if self.failed:
            return
        try:
            self._models[name] = weakref.ref(module)
            for group in self._groups:
                group.on_model(name, module)
        except Exception as error:
            self.fail(error)

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
        self._disarm()
        for group in self._groups:
            group.on_remove()
        if warnings.showwarning is self._showwarning_hook:
            warnings.showwarning = self._original_showwarning
        if self._original_dl_iter is not None:
            if DataLoader.__iter__ is self._patched_dl_iter:
                DataLoader.__iter__ = self._original_dl_iter  # type: ignore[method-assign]
            self._original_dl_iter = None

    def _stop(self, reason: str) -> None:
        """``--steps N`` reached: evaluate the end-of-run rules and end the script cleanly."""
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
        self._loss_count += 1
        self._last_loss = loss
        if not math.isfinite(loss):
            self.alert(
                "loss-nonfinite",
                f"the loss is {loss} at step {step}",
                place="loss",
                evidence=f"loss={loss}",
            )
            return
        if len(self._first_losses) < 10:
            self._first_losses.append(loss)
        self._recent.append(loss)
        self._min_loss = min(self._min_loss, loss)
        n = self._loss_count
        if n >= 20 and n % 10 == 0:
            self._loss_trend(step)

    def _loss_trend(self, step: int) -> None:
        first = sum(self._first_losses) / len(self._first_losses)
        recent = sum(self._recent) / len(self._recent)
        factor = self.config.option("loss-diverging", "factor", 3.0)
        if recent > factor * max(abs(first), 1e-8) and recent > self._min_loss * factor:
            self.alert(
                "loss-diverging",
                f"the loss climbed from {_fmt(first)} to {_fmt(recent)} by step {step}",
                evidence=f"mean of first 10: {_fmt(first)}, last 20: {_fmt(recent)}, "
                f"min: {_fmt(self._min_loss)}",
            )
        flat_after = int(self.config.option("loss-flat", "steps", 40))
        if self._loss_count >= flat_after and not self.overfit_batch:
            change = abs(first - recent)
            scale = max(abs(first), 1e-8)
            tolerance = self.config.option("loss-flat", "tolerance", 0.02)
            # Means of 10 and 20 batches: batch-to-batch noise averages out, a trend does not.
            if change < tolerance * scale:
                self.alert(
                    "loss-flat",
                    f"the loss stayed at {_fmt(recent)} for {self._loss_count} steps",
                    evidence=f"mean of first 10: {_fmt(first)}, last 20: {_fmt(recent)}",
                )

    # --- windows -------------------------------------------------------------------------------

    def _open_window(self, step: int) -> None:
        self._armed = True
        self.window_step = step
        self._forwards = []
        self._window_started = time.perf_counter()
        self._patch_functional()
        models = self.models_live()
        for name, model in models.items():
            self._handles.append(
                model.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True)
            )
            self._handles.append(model.register_forward_hook(self._post_hook(name)))
        for group in self._groups:
            group.on_window_open(step, models)

    def _disarm(self) -> None:
        self._armed = False
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for name, original in self._patched_f.items():
            setattr(F, name, original)
        self._patched_f = {}
        for group in self._groups:
            group.on_disarm()

    def _close_window(self, step: int) -> None:
        elapsed = time.perf_counter() - self._window_started
        forwards = self._forwards
        self._disarm()
        self._check_forwards(forwards, final=False)
        self._check_initial_loss()
        for group in self._groups:
            group.on_window_close(step, elapsed)

    # --- hooks of a window ---------------------------------------------------------------------

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            try:
                record = Forward(name, module.training, torch.is_grad_enabled())
                self._forwards.append(record)
                for group in self._forward_groups:
                    group.on_forward(record, args, kwargs)
            except Exception as error:
                self.fail(error)

        return hook

    def _post_hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            try:
                if not self._forwards or self._forwards[-1].model != name:
                    return
                record = self._forwards[-1]
                tensor = _first_tensor(output)
                if tensor is not None and tensor.requires_grad:
                    record.requires_grad = True

                    def got_grad(_grad: torch.Tensor) -> None:
                        record.got_grad = True

                    tensor.register_hook(got_grad)
            except Exception as error:
                self.fail(error)

        return hook

    # --- functional losses, wrapped during windows ----------------------------------------------

    def _patch_functional(self) -> None:
        wrappers = {
            "cross_entropy": self._check_cross_entropy,
            "nll_loss": self._check_nll,
            "binary_cross_entropy_with_logits": self._check_bce_logits,
            "binary_cross_entropy": self._check_bce,
            "kl_div": self._check_kl_div,
        }
        for fname, check in wrappers.items():
            original = getattr(F, fname, None)
            if original is None or fname in self._patched_f:
                continue
            self._patched_f[fname] = original
            setattr(F, fname, self._wrap_loss(fname, original, check))

    def _wrap_loss(self, fname: str, original: Any, check: Callable[..., Any]) -> Any:
        engine = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            info = None
            try:
                info = check(fname, *args, **kwargs)
            except Exception as error:  # a rule must never break the loss
                engine.fail(error)
            result = original(*args, **kwargs)
            if info is not None and isinstance(result, torch.Tensor) and result.numel() == 1:
                try:
                    engine._initial_seen(info, float(result.detach()))
                except Exception as error:
                    engine.fail(error)
            return result

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapper

    @staticmethod
    def _loss_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        values = list(args[:2])
        if len(values) < 1:
            values.append(kwargs.get("input"))
        if len(values) < 2:
            values.append(kwargs.get("target"))
        return values[0], values[1]

    def _check_labels(self, fname: str, classes: int, target: Any, ignore_index: int) -> None:
        if not isinstance(target, torch.Tensor) or target.is_floating_point() or not target.numel():
            return
        valid = target[target != ignore_index]
        if not valid.numel():
            return
        bounds = torch.stack([valid.min(), valid.max()]).tolist()
        low, high = int(bounds[0]), int(bounds[1])
        if low < 0 or high >= classes:
            self.alert(
                "labels-out-of-range",
                f"{fname} gets class labels {low}..{high} but the input has {classes} classes "
                f"(0..{classes - 1})",
                place=fname,
                evidence=f"target min {low}, max {high}; input classes {classes}",
            )

    def _check_cross_entropy(self, fname: str, *args: Any, **kwargs: Any) -> Any:
        inp, target = self._loss_args(args, kwargs)
        if not isinstance(inp, torch.Tensor) or inp.ndim < 1 or not inp.numel():
            return None
        classes = inp.shape[1] if inp.ndim >= 2 else inp.shape[0]
        self._check_labels(fname, classes, target, int(kwargs.get("ignore_index", -100)))
        grad_fn = type(inp.grad_fn).__name__ if inp.grad_fn is not None else ""
        stats = torch.stack(
            [inp.min(), inp.max(), (inp.sum(dim=1 if inp.ndim >= 2 else 0) - 1).abs().max()]
        ).tolist()
        lo, hi, off = stats
        if ("Softmax" in grad_fn and "Log" not in grad_fn) or (lo >= 0 and hi <= 1 and off < 1e-3):
            self.alert(
                "softmax-into-ce",
                f"{fname} gets probabilities (values in [{_fmt(lo)}, {_fmt(hi)}], rows sum to 1)"
                f"{' from a softmax' if 'Softmax' in grad_fn else ''}",
                place=fname,
                evidence=f"input min {_fmt(lo)}, max {_fmt(hi)}, grad_fn {grad_fn or 'none'}",
            )
        soft = isinstance(target, torch.Tensor) and target.is_floating_point()
        if (
            not soft
            and kwargs.get("reduction", "mean") == "mean"
            and not kwargs.get("label_smoothing")
            and kwargs.get("weight") is None
            and len(args) <= 2
        ):
            return classes
        return None

    def _check_nll(self, fname: str, *args: Any, **kwargs: Any) -> None:
        inp, target = self._loss_args(args, kwargs)
        if not isinstance(inp, torch.Tensor) or inp.ndim < 1 or not inp.numel():
            return
        classes = inp.shape[1] if inp.ndim >= 2 else inp.shape[0]
        self._check_labels(fname, classes, target, int(kwargs.get("ignore_index", -100)))
        hi = float(inp.detach().max())
        if hi > 1e-3:
            self.alert(
                "nll-on-raw-scores",
                f"nll_loss gets values up to {_fmt(hi)}; log-probabilities are <= 0",
                place=fname,
                evidence=f"input max {_fmt(hi)}",
            )

    def _binary_targets(self, fname: str, target: Any) -> None:
        if not isinstance(target, torch.Tensor) or not target.numel():
            return
        lo, hi = torch.stack([target.min(), target.max()]).float().tolist()
        if lo < 0 or hi > 1:
            self.alert(
                "labels-out-of-range",
                f"{fname} gets targets in [{_fmt(lo)}, {_fmt(hi)}]; a binary loss needs [0, 1]",
                place=fname,
                evidence=f"target min {_fmt(lo)}, max {_fmt(hi)}",
            )

    def _check_bce_logits(self, fname: str, *args: Any, **kwargs: Any) -> None:
        inp, target = self._loss_args(args, kwargs)
        if not isinstance(inp, torch.Tensor) or not inp.numel():
            return
        self._binary_targets(fname, target)
        grad_fn = type(inp.grad_fn).__name__ if inp.grad_fn is not None else ""
        lo, hi = torch.stack([inp.min(), inp.max()]).tolist()
        if "Sigmoid" in grad_fn or (lo >= 0 and hi <= 1 and inp.numel() >= 64):
            self.alert(
                "sigmoid-into-bce-logits",
                f"{fname} gets values in [{_fmt(lo)}, {_fmt(hi)}]"
                f"{' from a sigmoid' if 'Sigmoid' in grad_fn else ''}; it expects logits",
                place=fname,
                evidence=f"input min {_fmt(lo)}, max {_fmt(hi)}, grad_fn {grad_fn or 'none'}",
            )

    def _check_bce(self, fname: str, *args: Any, **kwargs: Any) -> None:
        _inp, target = self._loss_args(args, kwargs)
        self._binary_targets(fname, target)

    def _check_kl_div(self, fname: str, *args: Any, **kwargs: Any) -> None:
        _inp, target = self._loss_args(args, kwargs)
        if kwargs.get("log_target") or not isinstance(target, torch.Tensor) or not target.numel():
            return
        lo = float(target.detach().min())
        if lo < 0:
            self.alert(
                "logprobs-as-probs",
                f"kl_div's target has negative values (min {_fmt(lo)}): log-probabilities "
                "where probabilities are expected",
                place=fname,
                evidence=f"target min {_fmt(lo)}, log_target=False",
            )

    def _check_same_shape(self, fname: str, *args: Any, **kwargs: Any) -> None:
        inp, target = self._loss_args(args, kwargs)
        if not isinstance(inp, torch.Tensor) or not isinstance(target, torch.Tensor):
            return
        if inp.shape != target.shape:
            self.alert(
                "loss-broadcast",
                f"{fname} gets input {tuple(inp.shape)} and target {tuple(target.shape)}: "
                "they broadcast",
                place="loss",
                evidence=f"input {tuple(inp.shape)}, target {tuple(target.shape)}",
            )

    def _showwarning(
        self, message: Any, category: Any, filename: str, lineno: int, *rest: Any
    ) -> None:
        try:
            if BROADCAST_WARNING in str(message):
                self.alert(
                    "loss-broadcast",
                    f"torch warned at {filename}:{lineno}: {message}",
                    place="loss",
                    evidence=str(message),
                )
        except Exception as error:
            self.fail(error)
        self._original_showwarning(message, category, filename, lineno, *rest)

    def _initial_seen(self, classes: int, value: float) -> None:
        if self._initial is None and self.window_step == 1:
            self._initial = (classes, value)

    # --- data ----------------------------------------------------------------------------------

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

    # --- rules evaluated when a window closes ---------------------------------------------------

    def _check_forwards(self, forwards: list[Forward], final: bool) -> None:
        for group in self._groups:
            group.on_forwards(forwards, final)

    def _check_initial_loss(self) -> None:
        if self._initial is None or self._initial_checked:
            return
        self._initial_checked = True
        classes, value = self._initial
        if classes < 2 or not math.isfinite(value):
            return
        expected = math.log(classes)
        factor = self.config.option("initial-loss", "factor", 2.0)
        if value > expected * factor or value < expected / factor / 2:
            self.alert(
                "initial-loss",
                f"the first cross-entropy loss is {_fmt(value)}; an untrained {classes}-class "
                f"model gives about ln {classes} = {_fmt(expected)}",
                place="cross_entropy",
                evidence=f"step 1 loss {_fmt(value)}, expected ~{_fmt(expected)}",
            )

    def _finish_rules(self) -> None:
        """The end of the run (or of ``--steps``): the last window, and the overfit verdict."""
        if self._armed:
            forwards = self._forwards
            self._disarm()
            self._check_forwards(forwards, final=True)
        for group in self._groups:
            group.on_finish()
        if self.overfit_batch:
            self._overfit_verdict()

    def _overfit_verdict(self) -> None:
        if not self._first_losses:
            return
        first = self._first_losses[0]
        last = self._last_loss
        best = self._min_loss
        reached = (
            last is not None and math.isfinite(last) and (last <= 0.1 * abs(first) or last < 0.05)
        )
        self._send(
            OverfitResult(
                rank=self.rank,
                step=self.step,
                steps=self._loss_count,
                first_loss=first,
                last_loss=last,
                min_loss=best if math.isfinite(best) else None,
                reached=reached,
                batches_replayed=self.overfit_replayed,
            )
        )
        if not reached:
            self.alert(
                "overfit-failed",
                f"on one batch repeated for {self._loss_count} steps the loss went from "
                f"{_fmt(first)} to {_fmt(last if last is not None else math.nan)}",
                evidence=f"first {_fmt(first)}, min {_fmt(best)}, last "
                f"{_fmt(last if last is not None else math.nan)}",
            )


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
