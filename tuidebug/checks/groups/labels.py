"""The training labels the loss functions got in windows: did they ever change, and which
classes came (the loss rules' ``constant-labels`` and ``missing-class``).

Only training calls count (grad on, the loss input requires grad): a validation loss is no
sample of the training labels. Kept per loss function (and number of classes): the first
label value and whether any other came (from the min and max the range check already reads),
the count, and for class indices on per-sample logits a count per class (one ``bincount`` per
call, copied to the CPU). Nothing else of the labels.

Per-sample logits: a 2-D ``(N, C)`` input that is not a view or reshape of a larger one
(``per_sample``). A language model's ``logits.view(-1, vocab)`` flattens its ``(B, T, vocab)``
logits, and most of a vocabulary never comes as a target, by nature: no class coverage for it
(its labels can still be constant, which is a bug there too). Classes are counted only up to
``MAX_CLASSES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MAX_CLASSES = 1000


@dataclass
class LabelSeen:
    """One loss function's training labels over the sampled steps."""

    first: float
    constant: bool = True
    count: int = 0
    steps: set[int] = field(default_factory=set)
    per_class: torch.Tensor | None = None  # int64 counts (CPU), class-index losses only


def per_sample(inp: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether a class-index loss scores one label per sample (not per token or pixel).

    Flattened logits are found two ways: a view's ``_base`` with more than two dims, and, since
    a Linear head on a (B, T, d) input returns a view of its own 2-D (B*T, V) result (so the
    base is 2-D again), the view or reshape node that made ``inp``: its saved input sizes."""
    if inp.ndim != 2 or target.ndim != 1:
        return False
    base = inp._base
    if base is not None and base.ndim > 2:
        return False
    sizes = getattr(inp.grad_fn, "_saved_self_sym_sizes", None)  # ViewBackward0, UnsafeView...
    return not (isinstance(sizes, tuple) and len(sizes) > 2)


def training_call(inp: object) -> bool:
    return isinstance(inp, torch.Tensor) and inp.requires_grad and torch.is_grad_enabled()


class LabelTally:
    """The tallies by (loss function, classes); ``classes`` is 0 for binary targets."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], LabelSeen] = {}

    def add(
        self,
        fname: str,
        classes: int,
        step: int,
        low: float,
        high: float,
        count: int,
        valid: torch.Tensor | None = None,
    ) -> None:
        """One training call's labels: their min and max, how many, and (class indices on
        per-sample logits, all within 0..classes-1) the labels themselves to count."""
        key = (fname, classes)
        seen = self.seen.get(key)
        if seen is None:
            seen = self.seen[key] = LabelSeen(first=low)
        if low != seen.first or high != seen.first:
            seen.constant = False
        seen.count += count
        seen.steps.add(step)
        if valid is not None and 0 < classes <= MAX_CLASSES:
            counts = torch.bincount(valid.reshape(-1), minlength=classes).cpu()
            seen.per_class = counts if seen.per_class is None else seen.per_class + counts
