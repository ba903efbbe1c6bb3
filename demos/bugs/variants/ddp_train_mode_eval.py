"""Variants: DistributedDataParallel (gloo, one CPU process, world size 1) evaluated under
torch.no_grad() without model.eval() every 25 steps; a custom nn.Module ending in nn.Sigmoid
fed to nn.BCEWithLogitsLoss (multi-label targets).

Rules: train-mode-eval, sigmoid-into-bce-logits
"""

import os
import tempfile

import _common as c
import torch
import torch.distributed as dist
from torch import nn


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Dropout(0.2))
        self.out = nn.Linear(64, c.CLASSES)
        self.act = nn.Sigmoid()  # BUG: BCEWithLogitsLoss applies the sigmoid itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.out(self.body(x)))


args = c.args(100)
store = os.path.join(tempfile.mkdtemp(), "pg")
dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
x, _ = c.classification()
tags = (x[:, : c.CLASSES] > 0).float()
model = nn.parallel.DistributedDataParallel(Tagger())
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.BCEWithLogitsLoss()
data = c.batches(x[:1792], tags[:1792])
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 25 == 0:
        with torch.no_grad():  # BUG: no model.eval(): Dropout stays on
            val = loss_fn(model(x[1792:]), tags[1792:]).item()
dist.destroy_process_group()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
