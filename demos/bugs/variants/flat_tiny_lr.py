"""Variants: Adam with a learning rate of 1e-9 (a typo for 1e-3) on a custom nn.Module with
GELU: the loss does not move and the updates are far below ~1e-3 of the weights.

Rules: loss-flat, update-ratio
"""

import _common as c
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(c.FEATURES, 64), nn.Linear(64, c.CLASSES)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](nn.functional.gelu(self.layers[0](x)))


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-9)  # BUG
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
