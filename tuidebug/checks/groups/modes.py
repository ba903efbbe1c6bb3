"""Rules on train/eval modes and autograd graphs, judged from the window's root-model forwards."""

from __future__ import annotations

from torch import nn

from tuidebug.checks.groups.base import Engine, Forward, RuleGroup

_MODE_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class ModeRules(RuleGroup):
    """A forward that is backpropagated is training; one that is not is evaluation."""

    rules = ("eval-mode-training", "train-mode-eval", "eval-builds-graph")

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._mode_modules: dict[str, bool] = {}

    def on_model(self, name: str, module: nn.Module) -> None:
        self._mode_modules[name] = any(
            isinstance(m, _MODE_MODULES) and getattr(m, "p", 1.0) != 0.0 for m in module.modules()
        )

    def on_forwards(self, forwards: list[Forward], final: bool) -> None:
        pending_last = not final and self.engine.source() == "backward"
        for index, record in enumerate(forwards):
            mode_modules = self._mode_modules.get(record.model, False)
            if record.got_grad:
                if not record.training and mode_modules:
                    self.alert(
                        "eval-mode-training",
                        f"{record.model} is in eval mode in a forward that is backpropagated "
                        f"(step {self.engine.window_step})",
                        place=record.model,
                        evidence=f"{record.model}.training=False; it has Dropout/BatchNorm",
                    )
                continue
            if pending_last and index == len(forwards) - 1:
                continue  # its backward may still come (the boundary is the next backward)
            if record.grad_enabled and record.requires_grad:
                self.alert(
                    "eval-builds-graph",
                    f"a forward of {record.model} near step {self.engine.window_step} builds a "
                    "graph that is never backpropagated",
                    place=record.model,
                    evidence="grad enabled, output requires grad, no backward reached it",
                )
            if record.training and mode_modules:
                self.alert(
                    "train-mode-eval",
                    f"{record.model} is evaluated in train mode near step "
                    f"{self.engine.window_step}",
                    place=record.model,
                    evidence=f"{record.model}.training=True in a forward that is not "
                    "backpropagated; it has Dropout/BatchNorm",
                )
