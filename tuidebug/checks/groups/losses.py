"""Rules on the loss: its values over the run, and what goes into the loss functions.

The loss, as a float, is read at every step (``on_loss``: floats only). During windows the
loss functions of ``torch.nn.functional`` are wrapped to look at their inputs and targets, and
so are the names the script's own modules bound to them (``from torch.nn.functional import
cross_entropy`` binds the function before any wrap: that name is rebound for the window too);
``warnings.showwarning`` is patched for the engine's life to see torch's broadcasting warning
(it chains to the original).
"""

from __future__ import annotations

import math
import os
import sys
import sysconfig
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tuidebug.checks.groups.base import Engine, RuleGroup, _fmt
from tuidebug.checks.groups.labels import LabelTally, per_sample, training_call
from tuidebug.wire.check_messages import OverfitResult

BROADCAST_WARNING = "will likely lead to incorrect results due to broadcasting"
RAREST_SEEN = 8  # missing-class: the fewest labels of the rarest class seen (see _judge_labels)


def _library_folders() -> tuple[str, ...]:
    """Where the interpreter's and installed packages' modules live (not the script's)."""
    paths = sysconfig.get_paths()
    folders = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    folders.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tuidebug's
    return tuple(os.path.join(os.path.abspath(f), "") for f in folders)


class _UserModules:
    """The script's own modules (``__main__`` and those imported from outside the libraries),
    whose globals may hold a loss function bound by name. Each module is classified once."""

    def __init__(self) -> None:
        self._libraries = _library_folders()
        self._verdict: dict[str, bool] = {}

    def namespaces(self) -> list[dict[str, Any]]:
        found = []
        for name, module in list(sys.modules.items()):
            user = self._verdict.get(name)
            if user is None:
                path = getattr(module, "__file__", None)
                user = name == "__main__" or (
                    isinstance(path, str)
                    and not os.path.abspath(path).startswith(self._libraries)
                    and not name.startswith(("torch", "tuidebug"))
                )
                if name != "__main__":  # runpy swaps __main__: look at it each time
                    self._verdict[name] = user
            if user and isinstance(getattr(module, "__dict__", None), dict):
                found.append(module.__dict__)
        return found


class LossRules(RuleGroup):
    """The loss history (for trends and the ``--overfit-batch`` verdict) and the loss inputs."""

    rules = (
        "loss-nonfinite",
        "loss-diverging",
        "loss-flat",
        "initial-loss",
        "softmax-into-ce",
        "sigmoid-into-bce-logits",
        "logprobs-as-probs",
        "nll-on-raw-scores",
        "labels-out-of-range",
        "loss-broadcast",
        "overfit-failed",
        "constant-labels",
        "missing-class",
    )

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Losses, as floats: the first few, the recent ones and the lowest.
        self._first_losses: list[float] = []
        self._recent: deque[float] = deque(maxlen=20)
        self._loss_count = 0
        self._min_loss = math.inf
        self._last_loss: float | None = None
        self._patched_f: dict[str, Any] = {}
        self._rebound: list[tuple[dict[str, Any], str, Any, Any]] = []  # (globals, name, was, ours)
        self._user_modules = _UserModules()
        self._initial: tuple[int, float] | None = None  # (classes, loss) of the first CE call
        self._initial_checked = False
        self._labels = LabelTally()
        self._original_showwarning = warnings.showwarning
        # A bound method is a new object on each access: keep the one installed, to compare.
        self._showwarning_hook = self._showwarning
        warnings.showwarning = self._showwarning_hook  # type: ignore[assignment]

    def on_window_open(self, step: int, models: dict[str, nn.Module]) -> None:
        self._patch_functional()

    def on_disarm(self) -> None:
        for name, original in self._patched_f.items():
            setattr(F, name, original)
        self._patched_f = {}
        for namespace, key, original, ours in self._rebound:
            if namespace.get(key) is ours:
                namespace[key] = original
        self._rebound = []

    def on_window_close(self, step: int, elapsed: float) -> None:
        self._check_initial_loss()
        if not self.engine.overfit_batch:  # one batch replayed: no sample of the labels
            self._judge_labels()

    def on_finish(self) -> None:
        if self.engine.overfit_batch:
            self._overfit_verdict()

    def on_remove(self) -> None:
        if warnings.showwarning is self._showwarning_hook:
            warnings.showwarning = self._original_showwarning

    # --- loss (every step: floats only) ---------------------------------------------------------

    def on_loss(self, step: int, loss: float) -> None:
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

    def _interleaved_objectives(self) -> bool:
        """Whether each step's loss is a different player's: two or more optimizers over
        disjoint parameters, nearly every step (each optimizer step) with a loss of its own.
        A GAN's discriminator and generator (pytorch/examples' dcgan), an actor and a critic:
        the series interleaves objectives that need not fall (a GAN at equilibrium keeps both
        near constant), so the trend rules, which compare its start with its end, stay out.
        Two optimizers on one loss (Muon and AdamW) give one loss per two steps: still judged."""
        optimizers = self.engine.optimizers_live()
        if len(optimizers) < 2 or self._loss_count < 0.75 * self.engine.step:
            return False
        seen: set[int] = set()
        for optimizer in optimizers:
            params = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if params & seen:
                return False
            seen |= params
        return True

    def _loss_trend(self, step: int) -> None:
        if self._interleaved_objectives():
            return
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
        if self._loss_count >= flat_after and not self.engine.overfit_batch:
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
        self._rebind_bare_names()

    def _rebind_bare_names(self) -> None:
        """Point the script's own names for the loss functions (``from torch.nn.functional
        import cross_entropy``, ``as ce`` too) at the wrappers, for the window."""
        wrapped = {id(original): getattr(F, name) for name, original in self._patched_f.items()}
        for namespace in self._user_modules.namespaces():
            for key, value in list(namespace.items()):
                ours = wrapped.get(id(value))
                if ours is not None and callable(value):
                    namespace[key] = ours
                    self._rebound.append((namespace, key, value, ours))

    def _wrap_loss(self, fname: str, original: Any, check: Callable[..., Any]) -> Any:
        group = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            info = None
            try:
                info = check(fname, *args, **kwargs)
            except Exception as error:  # a rule must never break the loss
                group.engine.fail(error)
            result = original(*args, **kwargs)
            if info is not None and isinstance(result, torch.Tensor) and result.numel() == 1:
                try:
                    group._initial_seen(info, float(result.detach()))
                except Exception as error:
                    group.engine.fail(error)
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

    def _check_labels(
        self, fname: str, inp: torch.Tensor, classes: int, target: Any, ignore_index: int
    ) -> None:
        if not isinstance(target, torch.Tensor) or target.is_floating_point() or not target.numel():
            return
        valid = target[target != ignore_index]
        if not valid.numel():
            return
        bounds = torch.stack([valid.min(), valid.max()]).tolist()
        low, high = int(bounds[0]), int(bounds[1])
        in_range = low >= 0 and high < classes
        if training_call(inp):
            count = valid if in_range and per_sample(inp, target) else None
            self._labels.add(
                fname, classes, self.engine.window_step, low, high, valid.numel(), count
            )
        if not in_range:
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
        self._check_labels(fname, inp, classes, target, int(kwargs.get("ignore_index", -100)))
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
        self._check_labels(fname, inp, classes, target, int(kwargs.get("ignore_index", -100)))
        hi = float(inp.detach().max())
        if hi > 1e-3:
            self.alert(
                "nll-on-raw-scores",
                f"nll_loss gets values up to {_fmt(hi)}; log-probabilities are <= 0",
                place=fname,
                evidence=f"input max {_fmt(hi)}",
            )

    def _binary_targets(self, fname: str, inp: Any, target: Any) -> None:
        if not isinstance(target, torch.Tensor) or not target.numel():
            return
        lo, hi = torch.stack([target.min(), target.max()]).float().tolist()
        if training_call(inp):
            self._labels.add(fname, 0, self.engine.window_step, lo, hi, target.numel())
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
        self._binary_targets(fname, inp, target)
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
        inp, target = self._loss_args(args, kwargs)
        self._binary_targets(fname, inp, target)

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
            self.engine.fail(error)
        self._original_showwarning(message, category, filename, lineno, *rest)

    def _initial_seen(self, classes: int, value: float) -> None:
        if self._initial is None and self.engine.window_step == 1:
            self._initial = (classes, value)

    # --- rules evaluated when a window closes, or at the end -----------------------------------

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

    def _judge_labels(self) -> None:
        """constant-labels and missing-class, from the training labels seen so far."""
        for (fname, classes), seen in self._labels.seen.items():
            steps = f"{len(seen.steps)} sampled steps"
            if seen.constant:
                if len(seen.steps) >= 3 and seen.count >= 64:
                    self.alert(
                        "constant-labels",
                        f"every training label given to {fname} is {_fmt(seen.first)} "
                        f"({seen.count} labels in {steps})",
                        place=fname,
                        evidence=f"min = max = {_fmt(seen.first)} in every call"
                        + (f"; the input has {classes} classes" if classes else ""),
                    )
                continue
            counts = seen.per_class
            if counts is None:
                continue
            total = int(counts.sum())
            least = int(self.config.option("missing-class", "labels", 500))
            per_class = self.config.option("missing-class", "per_class", 20)
            if total < max(least, per_class * classes):
                continue
            absent = [c for c, n in enumerate(counts.tolist()) if n == 0]
            # A class is judged missing only when every class that came, came often: had it been
            # as common as the rarest one seen (>= RAREST_SEEN of `total`), `total` draws miss
            # it with a chance under e^-RAREST_SEEN. Labels with a long tail (a language
            # model's next words, Zipf: pytorch/examples' word_language_model, tests/checks/
            # corpus/) have classes seen once or twice, and an absent one is just rarer still.
            rarest = min((n for n in counts.tolist() if n > 0), default=0)
            if absent and rarest >= RAREST_SEEN:
                shown = ", ".join(str(c) for c in absent[:10]) + (
                    ", ..." if len(absent) > 10 else ""
                )
                self.alert(
                    "missing-class",
                    f"class{'es' if len(absent) > 1 else ''} {shown} of 0..{classes - 1} never "
                    f"appear{'' if len(absent) > 1 else 's'} in the training labels of {fname} "
                    f"({total} labels in {steps})",
                    place=fname,
                    evidence=f"{len(absent)} of {classes} classes (the input's width) with no "
                    f"label; the most frequent class has {int(counts.max())}, the rarest seen "
                    f"{rarest}",
                )

    def _overfit_verdict(self) -> None:
        if not self._first_losses:
            return
        first = self._first_losses[0]
        last = self._last_loss
        best = self._min_loss
        reached = (
            last is not None and math.isfinite(last) and (last <= 0.1 * abs(first) or last < 0.05)
        )
        self.engine.send(
            OverfitResult(
                rank=self.engine.rank,
                step=self.engine.step,
                steps=self._loss_count,
                first_loss=first,
                last_loss=last,
                min_loss=best if math.isfinite(best) else None,
                reached=reached,
                batches_replayed=self.engine.overfit_replayed,
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
