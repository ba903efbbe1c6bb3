"""Variant: a map-style Dataset does expensive per-sample work in __getitem__ (simulated with a
sleep) in the main process (num_workers=0).

Rules: data-bottleneck
"""

import time

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Slow(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self) -> None:
        self.x, self.y = c.classification()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(0.0002)  # BUG: per-sample decoding in the training process
        return self.x[i], self.y[i]


args = c.args(100)
loader = DataLoader(Slow(), batch_size=64, shuffle=True)
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
