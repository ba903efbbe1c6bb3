"""Rules on gradients and updates: stale or exploding or vanishing gradients, the update size,
the learning rate and its scheduler, parameters that no gradient or no optimizer reaches."""

from __future__ import annotations

import math
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tuidebug.checks.groups.base import Engine, RuleGroup, _fmt

GRAD_SAMPLE_PARAMS = 4  # parameters whose gradients are followed for grad-not-zeroed
GRAD_SAMPLE_NUMEL = 1 << 20
UPDATE_SAMPLE_WEIGHTS = 8
# Windows in a row whose update was skipped (no optimizer step: a GradScaler that found inf
# gradients) before their non-finite gradients count: an fp16 scaler skips a few first steps
# while it finds its scale; a NaN born in the model makes it skip every one.
SKIPPED_WINDOWS = 5
# update-ratio ignores the windows of the first steps (all sampled, 1-4): weights still at their
# initial scale move by a large share in healthy runs (tests/checks/corpus: word_language_model's
# median ratio is 0.10-0.17 at steps 2-6 and 0.03 at step 11; regression's 0.9, 0.18, 0.11 at
# steps 2-4), and a warmup from zero makes them tiny; the rule judges from step 6 on.
UPDATE_FIRST_JUDGED_STEP = 5
# Far above, the ratio is judged with the loss: a step too large makes the run worse than where
# it started, so at least UPDATE_WORSE of the last UPDATE_LOSSES losses are not below the first
# one (the untrained model's; a non-finite loss is not below). Weights that travel from their
# initial scale to a far solution make large updates for tens of steps while the loss falls
# (tests/checks/corpus' regression.py: hand-written SGD moves |w| 1.4 -> 6.8 over 60 steps,
# ratios 0.41 and 0.10 at steps 11 and 16, 3 and 4 of the 10 losses before them not below the
# first; on 60 seeds of it simulated for 200 steps the ratio alone fired in about half, this in
# 5). Told by neither the weights' norm, their travel nor the direction of the updates: those
# of demos/bugs/huge_updates.py (Adam at lr 0.5: 10 of 10 losses above the first, from step 2
# on) grow and travel alike. Far below needs no loss: the weights barely move.
UPDATE_LOSSES = 10
UPDATE_WORSE = 8
_SCHEDULER_CLASS: Any = getattr(torch.optim.lr_scheduler, "LRScheduler", None) or getattr(
    torch.optim.lr_scheduler, "_LRScheduler", None
)
# Every DataLoader iterator's base class (private: looked up, not imported, like the above).
_LOADER_ITER_CLASS: Any = getattr(torch.utils.data.dataloader, "_BaseDataLoaderIter", None)
# Optimizers whose update does not grow with the gradient's scale (they divide by a running
# norm of it, or use its sign): a gradient much larger than its weight is no danger by itself
# there (a loss summed over the batch, as pytorch/examples' VAE has, makes every gradient
# large; mnist's Adadelta sees |grad| 11x |weight| at step 2, tests/checks/corpus), so
# exploding-gradients judges their parameters' gradients only when not finite;
# update-ratio judges the steps they take. SGD and unknown optimizers keep the ratio test.
_SCALE_FREE_OPTIMIZERS = tuple(
    getattr(torch.optim, name)
    for name in (
        "Adam",
        "AdamW",
        "Adamax",
        "NAdam",
        "RAdam",
        "Adadelta",
        "Adagrad",
        "RMSprop",
        "Rprop",
        "SparseAdam",
        "LBFGS",
        "Muon",
    )
    if hasattr(torch.optim, name)
)
_SCALE_FREE_NAMES = ("Adafactor", "Lion", "Adam8bit", "AdamW8bit", "PagedAdamW", "FusedAdam")


def _scale_free(optimizer: Any) -> bool:
    return isinstance(optimizer, _SCALE_FREE_OPTIMIZERS) or type(optimizer).__name__.startswith(
        _SCALE_FREE_NAMES
    )


class GradientRules(RuleGroup):
    """Gradient hooks on the parameters during windows, a few weights copied at each window's
    start; ``LRScheduler.__init__`` patched for the engine's life (to know which exist)."""

    rules = (
        "grad-not-zeroed",
        "exploding-gradients",
        "vanishing-gradients",
        "update-ratio",
        "lr-zero",
        "lr-never-changes",
        "param-no-grad",
        "param-not-in-optimizer",
    )

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._schedulers: list[tuple[weakref.ref[Any], int, int]] = []  # (ref, last_epoch, step)
        self._grad_watch: list[tuple[str, nn.Parameter, torch.Tensor | None, list[Any]]] = []
        self._grads_seen: set[int] = set()
        self._grad_refs: dict[int, torch.Tensor] = {}
        self._backward_windows = 0
        self._weights_before: list[tuple[str, nn.Parameter, torch.Tensor]] = []
        self._ratios_low = 0
        self._ratios_high = 0
        self._first_loss: float | None = None
        self._recent_losses: deque[float] = deque(maxlen=UPDATE_LOSSES)
        self._lr_zero_since: int | None = None
        self._optimizer_checked_at = 0
        self._stepped: set[int] = set()  # ids of the optimizers that stepped in the window
        self._watching_steps = False  # ... and optimizers were known to watch for it
        self._window_source: str | None = None  # how boundaries were found when it opened
        self._skipped_windows = 0  # windows in a row with no optimizer step (see above)
        # The most batches an epoch of the script's DataLoaders has (read as each iterator is
        # made): a scheduler stepped once an epoch is not "never stepped" before an epoch ends
        # (pytorch/examples' mnist: StepLR after each 40-batch epoch, tests/checks/corpus).
        self._epoch_batches = 0
        self._patches: list[tuple[Any, str, Any, Any]] = []
        if _LOADER_ITER_CLASS is not None:
            self._patches.append(_after_call(_LOADER_ITER_CLASS, "__init__", self._loader_seen))
        if _SCHEDULER_CLASS is not None:
            self._patches.append(_after_call(_SCHEDULER_CLASS, "__init__", self._scheduler_seen))

    def on_window_open(self, step: int, models: dict[str, nn.Module]) -> None:
        if models and not self.engine.sharded:
            self._watch_grads(models)
            self._snapshot_weights(models)
        self._stepped = set()
        self._window_source = self.engine.source()
        optimizers = self.engine.optimizers_live()
        self._watching_steps = bool(optimizers)
        for optimizer in optimizers:
            self.engine.hook(optimizer.register_step_pre_hook(self._on_optimizer_step))

    def _on_optimizer_step(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        self._stepped.add(id(optimizer))

    def on_loss(self, step: int, loss: float) -> None:
        if self._first_loss is None:
            self._first_loss = loss
        else:
            self._recent_losses.append(loss)

    def on_window_close(self, step: int, elapsed: float) -> None:
        grad_watch, self._grad_watch = self._grad_watch, []
        grad_refs, self._grad_refs = self._grad_refs, {}
        weights, self._weights_before = self._weights_before, []
        # A window whose boundaries changed kind (the first backward of a gradient
        # accumulation ended a step until the first optimizer step told otherwise: nanoGPT's,
        # tests/checks/corpus) began in the middle of a step: the gradient it found there is
        # no previous step's.
        if self.engine.source() == self._window_source:
            self._check_grad_accumulation(grad_watch)
        # No optimizer step in the window: the update was skipped (GradScaler on inf
        # gradients, probe/amp.py): its gradients are the scaler's business, for a while.
        skipped = self._watching_steps and not self._stepped
        self._skipped_windows = self._skipped_windows + 1 if skipped else 0
        self._check_gradients(grad_refs, skipped and self._skipped_windows < SKIPPED_WINDOWS)
        self._check_updates(weights)
        self._check_lr(step)
        if step >= 5 and self._optimizer_checked_at == 0:
            self._optimizer_checked_at = step
            self._check_optimizer_coverage()
        if self._backward_windows >= 3:
            self._check_params_without_grad()

    def on_finish(self) -> None:
        if self._optimizer_checked_at == 0:
            self._check_optimizer_coverage()

    def on_remove(self) -> None:
        for cls, name, original, patched in self._patches:
            if getattr(cls, name) is patched:
                setattr(cls, name, original)
        self._patches = []

    def _watch_grads(self, models: dict[str, nn.Module]) -> None:
        """Gradient hooks: which parameters get one, and what each backward adds to a few."""
        chosen = 0
        for name, model in models.items():
            for pname, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                self.engine.hook(
                    param.register_post_accumulate_grad_hook(self._accumulated(name, pname))
                )
                if chosen < GRAD_SAMPLE_PARAMS and 1 < param.numel() <= GRAD_SAMPLE_NUMEL:
                    chosen += 1
                    before = None if param.grad is None else param.grad.detach().clone()
                    contributions: list[Any] = []
                    self.engine.hook(param.register_hook(self._contribution(contributions)))
                    self._grad_watch.append((f"{name}.{pname}", param, before, contributions))

    def _accumulated(self, model: str, pname: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            self._grads_seen.add(id(param))
            if param.grad is not None:
                self._grad_refs[id(param)] = param.grad

        return hook

    @staticmethod
    def _contribution(store: list[Any]) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            store.append(grad.detach().clone())

        return hook

    def _snapshot_weights(self, models: dict[str, nn.Module]) -> None:
        weights = [
            (f"{name}.{pname}", p)
            for name, model in models.items()
            for pname, p in model.named_parameters()
            if p.requires_grad and p.ndim >= 2
        ]
        if len(weights) > UPDATE_SAMPLE_WEIGHTS:
            stride = len(weights) / UPDATE_SAMPLE_WEIGHTS
            weights = [weights[int(i * stride)] for i in range(UPDATE_SAMPLE_WEIGHTS)]
        self._weights_before = [(n, p, p.detach().clone()) for n, p in weights]

    def _check_grad_accumulation(
        self, watch: list[tuple[str, nn.Parameter, torch.Tensor | None, list[Any]]]
    ) -> None:
        # Another optimizer's turn (pytorch/examples' dcgan, tests/checks/corpus): a GAN's
        # generator step backpropagates through the discriminator too, whose gradients then sit
        # on top of its own step's until its next zero_grad, and its optimizer does not step in
        # this window: its parameters are not judged here. A parameter no optimizer owns is
        # (its gradients pile up: param-not-in-optimizer's variants). In a window where no
        # watched optimizer's step was seen (a skipped AMP step; dcgan's step-3 window, both
        # optimizers live, neither step seen by the window's hooks) no update is known to
        # have applied these gradients: nothing is judged.
        if self._watching_steps and not self._stepped:
            return
        optimizers = self.engine.optimizers_live() if self._stepped else []
        stepped = {id(p) for o in optimizers if id(o) in self._stepped for p in _params(o)}
        idle = {id(p) for o in optimizers if id(o) not in self._stepped for p in _params(o)}
        idle -= stepped
        for name, param, before, contributions in watch:
            grad = param.grad
            if before is None or grad is None or not contributions or id(param) in idle:
                continue
            added = (
                torch.stack(contributions).sum(0) if len(contributions) > 1 else contributions[0]
            )
            if added.shape != grad.shape or before.shape != grad.shape:
                continue
            g, b, c = (
                grad.detach().flatten().float(),
                before.flatten().float(),
                added.flatten().float(),
            )
            norms = torch.stack([g.norm(), b.norm(), c.norm()])
            cos_stale = F.cosine_similarity(g, b + c, dim=0)
            cos_fresh = F.cosine_similarity(g, c, dim=0)
            cos_prev = F.cosine_similarity(b, c, dim=0)
            values = torch.cat([norms, torch.stack([cos_stale, cos_fresh, cos_prev])]).tolist()
            gn, bn, cn, stale, fresh, prev = values
            if bn > 0 and cn > 0 and prev < 0.999 and stale > 0.9999 and fresh < 0.999:
                self.alert(
                    "grad-not-zeroed",
                    f"{name}.grad still holds the previous step's gradient at step "
                    f"{self.engine.window_step}",
                    place=name,
                    layer=name.split(".", 1)[1].rsplit(".", 1)[0] if "." in name else "",
                    evidence=f"|grad| {_fmt(gn)} = previous {_fmt(bn)} + this step's "
                    f"{_fmt(cn)} (cosine {stale:.5f})",
                )
                return

    def _check_gradients(self, grads: dict[int, torch.Tensor], skipped: bool = False) -> None:
        if grads:
            self._backward_windows += 1
        names: list[str] = []
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        scale_free: list[bool] = []  # the parameter's optimizer does not scale with its grad
        by_scale_free = {
            id(p) for opt in self.engine.optimizers_live() if _scale_free(opt) for p in _params(opt)
        }
        for name, model in self.engine.models_live().items():
            for pname, param in model.named_parameters():
                grad = grads.get(id(param))
                if grad is not None and param.ndim >= 2 and grad.shape == param.shape:
                    names.append(f"{name}.{pname}")
                    pairs.append((grad.detach(), param.detach()))
                    scale_free.append(id(param) in by_scale_free)
        if len(pairs) < 1:
            return
        gnorms = torch._foreach_norm([g.float() for g, _ in pairs])
        wnorms = torch._foreach_norm([w.float() for _, w in pairs])
        values = torch.stack([*gnorms, *wnorms]).tolist()
        g_list, w_list = values[: len(pairs)], values[len(pairs) :]
        explode = self.config.option("exploding-gradients", "ratio", 10.0)
        for name, free, g, w in zip(names, scale_free, g_list, w_list, strict=True):
            if skipped and not math.isfinite(g):
                continue  # not applied: the scaler skipped this update
            large = w > 0 and g / w > explode and not free
            if not math.isfinite(g) or large:
                self.alert(
                    "exploding-gradients",
                    f"{name}: |grad| {_fmt(g)} against |weight| {_fmt(w)} at step "
                    f"{self.engine.window_step}",
                    place=name,
                    layer=name.split(".", 1)[1].rsplit(".", 1)[0] if "." in name else "",
                    evidence=f"grad/weight norm ratio {_fmt(g / w) if w else 'inf'}",
                )
                return
        ratios = [g / w for g, w in zip(g_list, w_list, strict=True) if w > 0]
        if len(ratios) >= 3:
            top = max(ratios)
            floor = self.config.option("vanishing-gradients", "spread", 1e-4)
            first = ratios[0]
            if top > 0 and first < floor * top:
                self.alert(
                    "vanishing-gradients",
                    f"{names[0]} gets a gradient {_fmt(top / max(first, 1e-30))}x smaller "
                    "(relative to its weight) than the best-fed layer at step "
                    f"{self.engine.window_step}",
                    place=names[0],
                    layer=names[0].split(".", 1)[1].rsplit(".", 1)[0] if "." in names[0] else "",
                    evidence=f"grad/weight: first layer {_fmt(first)}, max {_fmt(top)}",
                )

    def _check_updates(self, weights: list[tuple[str, nn.Parameter, torch.Tensor]]) -> None:
        if not weights or self.engine.window_step < UPDATE_FIRST_JUDGED_STEP:
            return
        deltas = torch._foreach_norm([(p.detach() - w0).float() for _, p, w0 in weights])
        norms = torch._foreach_norm([w0.float() for _, _, w0 in weights])
        values = torch.stack([*deltas, *norms]).tolist()
        n = len(weights)
        ratios = sorted(d / w for d, w in zip(values[:n], values[n:], strict=True) if w > 0)
        if not ratios:
            return
        median = ratios[len(ratios) // 2]
        low = self.config.option("update-ratio", "low", 1e-5)
        high = self.config.option("update-ratio", "high", 0.1)
        if median == 0:
            return  # no update in this window (lr-zero / param-no-grad say why)
        self._ratios_low = self._ratios_low + 1 if median < low else 0
        self._ratios_high = self._ratios_high + 1 if median > high else 0
        worse = self._losses_not_below_first()
        if self._ratios_low >= 2 or (self._ratios_high >= 2 and worse is not False):
            side = "below" if median < low else "above"
            loss = ""
            if side == "above" and worse:
                loss = (
                    f"; {worse} of the last {len(self._recent_losses)} losses not below the "
                    f"first ({_fmt(self._first_loss or 0.0)})"
                )
            self.alert(
                "update-ratio",
                f"the median update/weight ratio is {median:.1e} at step "
                f"{self.engine.window_step}, far {side} ~1e-3",
                evidence=f"ratios over {len(ratios)} weights: min {ratios[0]:.1e}, median "
                f"{median:.1e}, max {ratios[-1]:.1e}{loss}",
            )

    def _losses_not_below_first(self) -> int | bool | None:
        """How many recent losses are not below the first (a count, when it makes the run
        worse than its start), False when the loss is falling, None with too few losses (no
        loss reported: the ratio is judged alone)."""
        first, recent = self._first_loss, self._recent_losses
        if first is None or len(recent) < UPDATE_LOSSES // 2:
            return None
        worse = sum(1 for value in recent if not value <= first)
        return worse if worse >= UPDATE_WORSE * len(recent) / UPDATE_LOSSES else False

    def _check_lr(self, step: int) -> None:
        optimizers = self.engine.optimizers_live()
        if not optimizers:
            return
        zero = any(
            float(group.get("lr", 1.0)) == 0.0
            for opt in optimizers
            for group in opt.param_groups
            if any(p.requires_grad for p in group["params"])
            and isinstance(group.get("lr", 1.0), (int, float))
        )
        if zero:
            if self._lr_zero_since is None:
                self._lr_zero_since = step
            # A warmup may start at zero: only a rate that stays zero is an alarm.
            if step - self._lr_zero_since >= 10:
                self.alert(
                    "lr-zero",
                    f"the learning rate has been 0 from step {self._lr_zero_since} to {step}",
                    evidence="param_groups lr == 0",
                )
        else:
            self._lr_zero_since = None
        # A scheduler stepped once an epoch first moves when the first epoch ends.
        after = max(
            int(self.config.option("lr-never-changes", "steps", 30)), self._epoch_batches + 2
        )
        for ref, epoch0, step0 in self._schedulers:
            sched = ref()
            if sched is None or type(sched).__name__ == "ReduceLROnPlateau":
                continue
            if step - step0 >= after and getattr(sched, "last_epoch", epoch0) == epoch0:
                self.alert(
                    "lr-never-changes",
                    f"{type(sched).__name__} was created but its step() was not called in "
                    f"{step - step0} optimizer steps",
                    place=type(sched).__name__,
                    evidence=f"last_epoch stayed {epoch0}; lr "
                    + ", ".join(_fmt(g["lr"]) for g in sched.optimizer.param_groups),
                )

    def _scheduler_seen(self, sched: Any) -> None:
        try:
            self._schedulers.append((weakref.ref(sched), int(sched.last_epoch), self.engine.step))
        except Exception as error:
            self.engine.fail(error)

    def _loader_seen(self, iterator: Any) -> None:
        try:
            batches = len(iterator)
        except TypeError:  # an IterableDataset: no length, no epoch to wait for
            return
        except Exception as error:
            self.engine.fail(error)
            return
        self._epoch_batches = max(self._epoch_batches, int(batches))

    def _check_optimizer_coverage(self) -> None:
        optimizers = self.engine.optimizers_live()
        if not optimizers:
            return
        covered = {id(p) for opt in optimizers for p in _params(opt)}
        for name, model in self.engine.models_live().items():
            missing = [
                pname
                for pname, p in model.named_parameters()
                if p.requires_grad and id(p) not in covered
            ]
            trainable = sum(1 for p in model.parameters() if p.requires_grad)
            # A model no optimizer touches at all (a teacher, an EMA copy) is meant that way.
            if missing and len(missing) < trainable:
                shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
                self.alert(
                    "param-not-in-optimizer",
                    f"{len(missing)} trainable parameters of {name} are in no optimizer: {shown}",
                    place=name,
                    layer=missing[0].rsplit(".", 1)[0] if "." in missing[0] else "",
                    evidence=f"{len(missing)} of "
                    f"{sum(1 for p in model.parameters() if p.requires_grad)} trainable tensors",
                )

    def _check_params_without_grad(self) -> None:
        for name, model in self.engine.models_live().items():
            missing = [
                pname
                for pname, p in model.named_parameters()
                if p.requires_grad and id(p) not in self._grads_seen
            ]
            trainable = sum(1 for p in model.parameters() if p.requires_grad)
            # A model that never gets any gradient is not trained here (a frozen teacher).
            if missing and len(missing) < trainable:
                shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
                self.alert(
                    "param-no-grad",
                    f"{len(missing)} trainable parameters of {name} got no gradient in "
                    f"{self._backward_windows} sampled steps: {shown}",
                    place=name,
                    layer=missing[0].rsplit(".", 1)[0] if "." in missing[0] else "",
                    evidence=f"never reached by backward: {shown}",
                )


def _params(optimizer: Any) -> list[Any]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _after_call(cls: Any, name: str, then: Callable[[Any], None]) -> tuple[Any, str, Any, Any]:
    """Wrap ``cls.name`` (a method) to call ``then(self)`` after it; (cls, name, original,
    wrapper), for ``on_remove`` to put the original back if the wrapper is still there."""
    original = getattr(cls, name)

    def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(obj, *args, **kwargs)
        then(obj)
        return result

    setattr(cls, name, wrapper)
    return cls, name, original, wrapper
