"""Rules on train/eval modes and autograd graphs, judged from every root-model forward.

The engine classifies each forward of a root model, on every step (``Forward.kind``): a forward
that a backward reached is training; one that none reached is an evaluation. These rules read
the settled records (``on_settled``), so an evaluation at an epoch's end, in a helper, under
``torch.inference_mode`` or through a DataParallel / DDP wrapper is seen like any other.

A generative model's sampling pass is no evaluation: a model whose trained outputs are another
root model's inputs (a GAN's generator, trained through its discriminator) and that runs on its
own, its output taken by no root model, makes samples to look at (pytorch/examples' dcgan:
``netG(fixed_noise)`` once an epoch, saved as images; tests/checks/corpus). Train mode is how
such a generator runs in training and in sampling (DCGAN's is never put in eval mode, its
running statistics never used), and nothing in the run scores those samples: neither the noisy
metric nor the drift that train-mode-eval names. Nor is a forward whose output a trained
forward of another model takes (a WGAN's generator under no_grad making its critic's fakes):
it makes training data. The same model evaluated with its output fed on into an evaluation (an
encoder's features into its head) is still judged.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

from tuidebug.checks.groups.base import Engine, Forward, RuleGroup

_MODE_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
# Forwards in train mode of a model not trained yet, kept until its role is known: beyond this
# many, judged as they are (the records never grow without bound).
MAX_WAITING = 64


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
        # Models with a trained forward, and those whose trained output fed another root
        # model (see the module's docstring); per model, its forwards in train mode that no
        # backward reached, waiting for the model's role to be known.
        self._trained: set[str] = set()
        self._feeders: set[str] = set()
        self._train_mode: dict[str, list[Forward]] = {}

    def on_model(self, name: str, module: nn.Module) -> None:
        self._mode_modules[name] = any(
            isinstance(m, _MODE_MODULES) and getattr(m, "p", 1.0) != 0.0 for m in module.modules()
        )

    def on_settled(self, forwards: list[Forward]) -> None:
        by_kind: dict[tuple[str, str], list[Forward]] = {}
        for record in forwards:
            kind = record.kind()
            if kind == "train":
                self._trained.add(record.model)
                if record.consumer is not None:
                    self._feeders.add(record.model)
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
            if mode_modules:
                self._train_mode.setdefault(model, []).extend(r for r in records if r.training)
        self._judge_train_mode(final=False)

    def on_finish(self) -> None:
        self._judge_train_mode(final=True)

    def _judge_train_mode(self, final: bool) -> None:
        """train-mode-eval on the evaluations in train mode, once the model's role is known:
        after one of its forwards was trained (whether it feeds another model), or at the end
        (a model never trained here: a frozen teacher, evaluation only), or once ``MAX_WAITING``
        wait (a model that is never trained is not a generator)."""
        ready = [
            model
            for model, records in self._train_mode.items()
            if final or model in self._trained or len(records) >= MAX_WAITING
        ]
        for model in ready:
            in_train_mode = [r for r in self._train_mode.pop(model) if not self._no_evaluation(r)]
            if not in_train_mode:
                continue
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

    def _no_evaluation(self, record: Forward) -> bool:
        """A forward in train mode that no backward reached, yet no evaluation: it made the
        input of another model's trained forward (a WGAN's generator under no_grad making the
        critic's fakes), or it is a generator's sampling pass (its trained outputs feed another
        model, this one's none)."""
        consumer = record.consumer
        if consumer is None:
            return record.model in self._feeders
        return consumer.got_grad
