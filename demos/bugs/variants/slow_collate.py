"""Variant: a slow collate_fn (per-batch augmentation done in Python, simulated with a sleep)
on a DataLoader with no workers.

Rules: data-bottleneck
"""

import time

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    time.sleep(0.012)  # BUG: heavy work in the main process for every batch
    xs, ys = zip(*samples, strict=True)
    return torch.stack(xs), torch.stack(ys)


args = c.args(100)
x, y = c.classification()
loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, collate_fn=collate)
model = nn.Sequential(nn.Linear(c.FEATURES, 32), nn.ReLU(), nn.Linear(32, c.CLASSES))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
step = 0
while step < args.steps:
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
print(f"done: {step} steps, loss {loss.item():.4f}")
