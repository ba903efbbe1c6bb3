"""Variants: DistributedDataParallel (gloo, world size 1) whose wrapped module is put in eval
mode through ``ddp.module.eval()`` for a baseline and never back (the wrapper's own flag stays
True); the optimizer is given the body's parameters only, so the head never trains, and
optimizer.zero_grad() never clears the head's gradients (they pile up step after step).

Rules: eval-mode-training, param-not-in-optimizer, grad-not-zeroed
"""

import os
import tempfile

import _common as c
import torch
import torch.distributed as dist
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(c.FEATURES, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU()
        )
        self.head = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


args = c.args(100)
store = os.path.join(tempfile.mkdtemp(), "pg")
dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
x, y = c.classification()
model = nn.parallel.DistributedDataParallel(Net())
optimizer = torch.optim.SGD(model.module.body.parameters(), lr=0.05)  # BUG: head left out
model.module.eval()  # BUG: a baseline in eval mode, and no model.train() after it
with torch.no_grad():
    print(f"baseline {nn.functional.cross_entropy(model(x[:256]), y[:256]).item():.4f}")
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
dist.destroy_process_group()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
