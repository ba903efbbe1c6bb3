"""The interface between the checks engine and its rule groups.

A group holds the logic of the rules it owns (``rules``) and overrides the hooks it needs; the
engine (``tuidebug/checks/engine.py``) calls them. A group reaches the engine only through
``Engine`` below (alert, the live models, the step, the window's hook handles), never by
importing engine.py.

Cost: ``on_loss`` runs on every step and ``on_forward`` on every forward of a root model inside
a window; the engine calls them only on the groups that override them. Keep them to float tests
and the few tensor reductions a rule needs. ``on_eval_forward`` runs outside windows, on any
step, for the forwards that look like evaluations when they start: bound its work per step.
``on_settled`` sees every root-model forward of the run (not only a window's), in batches,
once its backward had time to come.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from torch import nn

    from tuidebug.checks.config import ChecksConfig
    from tuidebug.wire.messages import Message


class Engine(Protocol):
    """What a rule group sees of the engine."""

    rank: int
    step: int
    window_step: int  # the sampled step the open (or last) window belongs to
    config: ChecksConfig
    overfit_batch: bool
    overfit_replayed: int
    sharded: bool  # a root model is sharded (FSDP/DTensor): read no parameter's values

    def alert(
        self, rule: str, message: str, place: str = "", layer: str = "", evidence: str = ""
    ) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def hook(self, handle: Any) -> None: ...

    def send(self, message: Message) -> None: ...

    def source(self) -> str | None: ...

    def models_live(self) -> dict[str, nn.Module]: ...

    def optimizers_live(self) -> list[Any]: ...


class Forward:
    """One forward call of a root model: its flags, read by the engine's root hooks.

    ``training`` is the model's own mode (for a DataParallel / DistributedDataParallel wrapper,
    the wrapped module's); ``got_grad``: a backward reached its output; ``step``: the step it
    belongs to (the engine's step count when it ran); ``consumer``: the forward of another root
    model that took its output as input (a GAN's generator feeding its discriminator, an encoder
    its head), told by the storage the two tensors share, while the output lives.
    """

    __slots__ = (
        "consumer",
        "fingerprint",
        "got_grad",
        "grad_enabled",
        "inference",
        "model",
        "output",
        "requires_grad",
        "rerun",
        "step",
        "summary",
        "training",
    )

    def __init__(
        self,
        model: str,
        training: bool,
        grad_enabled: bool,
        inference: bool = False,
        step: int = 0,
    ) -> None:
        self.model = model
        self.training = training
        self.grad_enabled = grad_enabled
        self.inference = inference
        self.step = step
        self.requires_grad = False
        self.got_grad = False
        self.fingerprint: tuple[Any, ...] | None = None
        # The dataset rules' digest of the input (row hashes, per-feature numbers; never the
        # data), judged once the record is settled and its kind known.
        self.summary: Any = None
        # Called with the very tensor the model's last training forward got (not equal rows: the
        # same object): a metric on the batch just trained, or the probe's NaN replay.
        self.rerun = False
        self.output: weakref.ref[torch.Tensor] | None = None  # with two root models or more
        self.consumer: Forward | None = None

    def reached(self, _grad: Any) -> None:
        """The gradient hook on the forward's output: a backward reached it."""
        self.got_grad = True

    def kind(self) -> str:
        """What the forward was: "train", "eval", "eval-graph" (an evaluation that builds a
        graph) or "eval-mode-train" (trained in eval mode); judged once its backward could
        have come."""
        if self.got_grad:
            return "train" if self.training else "eval-mode-train"
        return "eval-graph" if self.grad_enabled and self.requires_grad else "eval"


def input_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors a root model was called with, positional first, then keywords in order."""
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class RuleGroup:
    """No-op hooks; a group overrides those its rules need (the engine guards every call)."""

    rules: tuple[str, ...] = ()  # the ids of ``rules.RULES`` whose logic lives here

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config

    def alert(
        self, rule: str, message: str, place: str = "", layer: str = "", evidence: str = ""
    ) -> None:
        """The engine's alert: once per (rule, place), unless the rule is silenced."""
        self.engine.alert(rule, message, place, layer, evidence)

    def on_model(self, name: str, module: nn.Module) -> None:
        """A root model was registered with the probe."""

    def on_loss(self, step: int, loss: float) -> None:
        """A step's loss as a float, on every step (floats only: no tensor work here)."""

    def on_window_open(self, step: int, models: dict[str, nn.Module]) -> None:
        """A window opens for sampled step ``step``: install hooks with ``engine.hook``."""

    def on_forward(self, record: Forward, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A root model's forward starts inside a window (runs per forward: keep it cheap)."""

    def on_eval_forward(
        self, record: Forward, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """A root model's forward starts outside a window with grad off, in inference mode or
        in eval mode (an evaluation, most likely): on any step, so bound the work per step."""

    def on_disarm(self) -> None:
        """The window's hooks are removed (also on failure): put back what was patched for it."""

    def on_forwards(self, forwards: list[Forward], final: bool) -> None:
        """The forwards of the window that closed (``final``: the run ended inside it)."""

    def on_settled(self, forwards: list[Forward]) -> None:
        """Root-model forwards of any step (not only sampled ones) whose backward, if any, has
        run: those from before the previous boundary, and at the end of the run all of them."""

    def on_window_close(self, step: int, elapsed: float) -> None:
        """The window closed at boundary ``step`` after ``elapsed`` seconds: judge what it saw."""

    def on_finish(self) -> None:
        """The end of the run (or of ``--steps``): the rules only the whole run can tell."""

    def on_remove(self) -> None:
        """The engine closes or fails: put back the patches that live as long as it."""
