"""Rules on gradients and updates: stale or exploding or vanishing gradients, the update size,
the learning rate and its scheduler, parameters that no gradient or no optimizer reaches."""

from __future__ import annotations

import math
import weakref
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
_SCHEDULER_CLASS: Any = getattr(torch.optim.lr_scheduler, "LRScheduler", None) or getattr(
    torch.optim.lr_scheduler, "_LRScheduler", None
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
        self._lr_zero_since: int | None = None
        self._optimizer_checked_at = 0
        self._stepped = False  # an optimizer stepped in the open window
        self._watching_steps = False  # ... and optimizers were known to watch for it
        self._skipped_windows = 0  # windows in a row with no optimizer step (see above)
        self._original_scheduler_init: Any = None
        if _SCHEDULER_CLASS is not None:
            self._original_scheduler_init = _SCHEDULER_CLASS.__init__
            group = self

            def scheduler_init(sched: Any, *args: Any, **kwargs: Any) -> None:
                group._original_scheduler_init(sched, *args, **kwargs)
                group._scheduler_seen(sched)

            self._patched_scheduler_init = scheduler_init
            _SCHEDULER_CLASS.__init__ = scheduler_init

    def on_window_open(self, step: int, models: dict[str, nn.Module]) -> None:
        if models:
            self._watch_grads(models)
            self._snapshot_weights(models)
        self._stepped = False
        optimizers = self.engine.optimizers_live()
        self._watching_steps = bool(optimizers)
        for optimizer in optimizers:
            self.engine.hook(optimizer.register_step_pre_hook(self._on_optimizer_step))

    def _on_optimizer_step(self, _optimizer: Any, _args: Any, _kwargs: Any) -> None:
        self._stepped = True

    def on_window_close(self, step: int, elapsed: float) -> None:
        grad_watch, self._grad_watch = self._grad_watch, []
        grad_refs, self._grad_refs = self._grad_refs, {}
        weights, self._weights_before = self._weights_before, []
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
        if (
            self._original_scheduler_init is not None
            and _SCHEDULER_CLASS.__init__ is self._patched_scheduler_init
        ):
            _SCHEDULER_CLASS.__init__ = self._original_scheduler_init

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
        for name, param, before, contributions in watch:
            grad = param.grad
            if before is None or grad is None or not contributions:
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
        for name, model in self.engine.models_live().items():
            for pname, param in model.named_parameters():
                grad = grads.get(id(param))
                if grad is not None and param.ndim >= 2 and grad.shape == param.shape:
                    names.append(f"{name}.{pname}")
                    pairs.append((grad.detach(), param.detach()))
        if len(pairs) < 1:
            return
        gnorms = torch._foreach_norm([g.float() for g, _ in pairs])
        wnorms = torch._foreach_norm([w.float() for _, w in pairs])
        values = torch.stack([*gnorms, *wnorms]).tolist()
        g_list, w_list = values[: len(pairs)], values[len(pairs) :]
        explode = self.config.option("exploding-gradients", "ratio", 10.0)
        for name, g, w in zip(names, g_list, w_list, strict=True):
            if skipped and not math.isfinite(g):
                continue  # not applied: the scaler skipped this update
            if not math.isfinite(g) or (w > 0 and g / w > explode):
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
        if not weights or self.engine.window_step < 2:
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
        if self._ratios_low >= 2 or self._ratios_high >= 2:
            side = "below" if median < low else "above"
            self.alert(
                "update-ratio",
                f"the median update/weight ratio is {median:.1e} at step "
                f"{self.engine.window_step}, far {side} ~1e-3",
                evidence=f"ratios over {len(ratios)} weights: min {ratios[0]:.1e}, median "
                f"{median:.1e}, max {ratios[-1]:.1e}",
            )

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
        after = int(self.config.option("lr-never-changes", "steps", 30))
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

    def _check_optimizer_coverage(self) -> None:
        optimizers = self.engine.optimizers_live()
        if not optimizers:
            return
        covered = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
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
