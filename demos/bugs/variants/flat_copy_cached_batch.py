"""Variants: the optimizer is built on a deep copy of the model (the model itself never
changes: the loss is flat); a get_batch() helper caches the batch it drew first.

Rules: loss-flat, same-batch
"""

import copy

import _common as c
import torch
from torch import nn

args = c.args(100)
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 32), nn.ReLU(), nn.Linear(32, c.CLASSES))
optimizer = torch.optim.Adam(copy.deepcopy(model).parameters(), lr=1e-3)  # BUG: a copy
_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
    if "batch" not in _cache:  # BUG: meant as a prefetch, returns the same batch forever
        idx = torch.randperm(len(x))[:64]
        _cache["batch"] = (x[idx], y[idx])
    return _cache["batch"]


loss_fn = nn.CrossEntropyLoss()
for _step in range(args.steps):
    xb, yb = get_batch()
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
