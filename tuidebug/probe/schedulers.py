"""Finding the LR schedulers of a run: no hook sees them, so they are looked up among the live
objects when needed (a checkpoint save or restore, a live hyperparameter change; never per
step: a scan of the heap costs tens of milliseconds)."""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any


def scheduler_types() -> tuple[type, ...]:
    """torch's LR scheduler base classes (``ReduceLROnPlateau`` was not an ``LRScheduler``
    before torch 2.2)."""
    import torch

    lr_scheduler = torch.optim.lr_scheduler
    base = getattr(lr_scheduler, "LRScheduler", None) or lr_scheduler._LRScheduler
    types: tuple[type, ...] = (base,)
    plateau = getattr(lr_scheduler, "ReduceLROnPlateau", None)
    if isinstance(plateau, type) and not issubclass(plateau, types):
        types = (*types, plateau)
    return types


def find_schedulers(optimizers: Iterable[Any]) -> list[Any]:
    """The live schedulers whose ``optimizer`` is one of ``optimizers``, in heap order."""
    ours = {id(o) for o in optimizers}
    if not ours:
        return []
    types = scheduler_types()
    found = []
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: it would ask proxies for __class__
        if issubclass(kind, types) and id(getattr(obj, "optimizer", None)) in ours:
            found.append(obj)
    return found
