"""Rules on how the network is built: dead ReLU layers, a bias cancelled by BatchNorm."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tuidebug.checks.groups.base import Engine, RuleGroup

_LINEAR_CONV = (nn.Linear, nn.modules.conv._ConvNd)


class ArchitectureRules(RuleGroup):
    """ReLU modules hooked on windows from step 3; Linear/Conv and BatchNorm on the first one."""

    rules = ("dead-relu", "bias-before-batchnorm")

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._relu_dead: dict[str, list[float]] = {}
        self._linear_outputs: dict[int, tuple[weakref.ref[torch.Tensor], str, str]] = {}
        self._bias_checked = False

    def on_window_open(self, step: int, models: dict[str, nn.Module]) -> None:
        for name, model in models.items():
            if step >= 3:
                for qualified, module in model.named_modules():
                    if isinstance(module, nn.ReLU):
                        self.engine.hook(
                            module.register_forward_hook(self._relu_hook(name, qualified))
                        )
            if not self._bias_checked:
                self._hook_bias_check(name, model)
        if models:
            self._bias_checked = True

    def on_disarm(self) -> None:
        self._linear_outputs = {}

    def on_window_close(self, step: int, elapsed: float) -> None:
        self._check_relus()

    def _relu_hook(self, model: str, qualified: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            try:
                if not isinstance(output, torch.Tensor) or output.ndim < 2:
                    return
                units = output.detach()
                if units.ndim == 2 or units.ndim == 3:
                    alive = (units.reshape(-1, units.shape[-1]) > 0).any(0)
                else:  # (N, C, ...): channels
                    alive = (units.transpose(0, 1).reshape(units.shape[1], -1) > 0).any(1)
                if alive.numel() >= 8 and units.shape[0] >= 8 and bool(units.isfinite().all()):
                    dead = 1.0 - float(alive.float().mean())
                    self._relu_dead.setdefault(f"{model}\0{qualified}", []).append(dead)
            except Exception as error:
                self.engine.fail(error)

        return hook

    def _hook_bias_check(self, model: str, root: nn.Module) -> None:
        """Once: does a Linear/Conv output with a bias go straight into a BatchNorm?"""
        for qualified, module in root.named_modules():
            if isinstance(module, _LINEAR_CONV) and getattr(module, "bias", None) is not None:
                self.engine.hook(module.register_forward_hook(self._linear_hook(qualified)))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                self.engine.hook(module.register_forward_pre_hook(self._bn_hook(model, qualified)))

    def _linear_hook(self, qualified: str) -> Callable[..., None]:
        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self._linear_outputs[id(output)] = (
                    weakref.ref(output),
                    qualified,
                    type(module).__name__,
                )

        return hook

    def _bn_hook(self, model: str, qualified: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            found = self._linear_outputs.get(id(args[0]))
            if found is None or found[0]() is not args[0]:
                return
            _ref, source, kind = found
            self.alert(
                "bias-before-batchnorm",
                f"{model}.{source} ({kind}, bias=True) feeds {model}.{qualified} (BatchNorm)",
                place=f"{model}.{source}",
                layer=source,
                evidence=f"{source}.bias is cancelled by {qualified}'s mean subtraction",
            )

        return hook

    def _check_relus(self) -> None:
        threshold = self.config.option("dead-relu", "share", 0.5)
        for key, shares in self._relu_dead.items():
            if len(shares) >= 2 and min(shares[-2:]) > threshold:
                model, qualified = key.split("\0")
                self.alert(
                    "dead-relu",
                    f"{shares[-1]:.0%} of the units after {model}.{qualified} are zero for "
                    "every sample of the batch",
                    place=f"{model}.{qualified}",
                    layer=qualified,
                    evidence="dead share in the last samples: "
                    + ", ".join(f"{s:.0%}" for s in shares[-2:]),
                )
