"""Rules on train/eval modes and autograd graphs, judged from every root-model forward.

The engine classifies each forward of a root model, on every step (``Forward.kind``): a forward
that a backward reached is training; one that none reached is an evaluation. These rules read
the settled records (``on_settled``), so an evaluation at an epoch's end, in a helper, under
``torch.inference_mode`` or through a DataParallel / DDP wrapper is seen like any other.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

from tuidebug.checks.groups.base import Engine, Forward, RuleGroup

_MODE_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _steps(records: list[Forward]) -> str:
    low, high = min(r.step for r in records), max(r.step for r in records)
    return f"step {low}" if low == high else f"steps {low}-{high}"


class ModeRules(RuleGroup):
    """A forward that is backpropagated is training; one that is not is evaluation."""

    rules = ("eval-mode-training", "train-mode-eval", "eval-builds-graph")

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._mode_modules: dict[str, bool] = {}
        # Forwards per (model, kind) over the run: the evidence says how often it happened.
        self.counts: Counter[tuple[str, str]] = Counter()

    def on_model(self, name: str, module: nn.Module) -> None:
        self._mode_modules[name] = any(
            isinstance(m, _MODE_MODULES) and getattr(m, "p", 1.0) != 0.0 for m in module.modules()
        )

    def on_settled(self, forwards: list[Forward]) -> None:
        by_kind: dict[tuple[str, str], list[Forward]] = {}
        for record in forwards:
            kind = record.kind()
            self.counts[(record.model, kind)] += 1
            by_kind.setdefault((record.model, kind), []).append(record)
        for (model, kind), records in by_kind.items():
            mode_modules = self._mode_modules.get(model, False)
            if kind == "eval-mode-train":
                if mode_modules:
                    self.alert(
                        "eval-mode-training",
                        f"{model} is in eval mode in a forward that is backpropagated "
                        f"({_steps(records)})",
                        place=model,
                        evidence=f"{model}.training=False in {len(records)} trained forward(s); "
                        "it has Dropout/BatchNorm",
                    )
                continue
            if kind == "train":
                continue
            if kind == "eval-graph":
                self.alert(
                    "eval-builds-graph",
                    f"{len(records)} forward(s) of {model} near {_steps(records)} build a graph "
                    "that is never backpropagated",
                    place=model,
                    evidence="grad enabled, output requires grad, no backward reached it "
                    f"({self.counts[(model, kind)]} such forwards so far)",
                )
            in_train_mode = [r for r in records if r.training]
            if in_train_mode and mode_modules:
                how = (
                    "under inference_mode"
                    if any(r.inference for r in in_train_mode)
                    else "under no_grad"
                    if not any(r.grad_enabled for r in in_train_mode)
                    else "not backpropagated"
                )
                self.alert(
                    "train-mode-eval",
                    f"{model} is evaluated in train mode near {_steps(in_train_mode)}",
                    place=model,
                    evidence=f"{model}.training=True in {len(in_train_mode)} forward(s) "
                    f"{how}; it has Dropout/BatchNorm",
                )
