"""Whether a model is sharded over the ranks (FSDP, DTensor): one answer for every extension.

A sharded model holds only this rank's shards: its checkpoint is every rank's (ckpt/sharded.py)
and its parameters are DTensors, whose ops (a norm, ``tolist``) may be collectives that a
probe must never start on one rank alone (the layer sampler stays off for it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def is_sharded(models: Iterable[Any]) -> bool:
    """Whether any of ``models`` is under FSDP (either API) or has DTensor parameters.

    False without a process group, with no import of torch.distributed's packages."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    for model in models:
        for module in model.modules():
            if isinstance(module, (FSDPModule, FullyShardedDataParallel)):
                return True
        if any(isinstance(p, DTensor) for p in model.parameters()):
            return True
    return False
