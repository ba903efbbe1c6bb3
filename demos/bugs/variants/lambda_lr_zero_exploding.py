"""Variants: a LambdaLR whose schedule returns 0 after a short "warmup" (meant to hold the
rate); a deep custom MLP initialised with weights 3x too large: gradients explode.

Rules: lr-zero, exploding-gradients
"""

import itertools

import _common as c
import torch
from torch import nn


class Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        sizes = [c.FEATURES] + [64] * 6
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(64, 1)
        with torch.no_grad():
            for layer in self.hidden:
                layer.weight.mul_(3.0)  # BUG: each layer amplifies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


args = c.args(100)
x, t = c.regression()
model = Deep()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer,
    lambda step: 1.0 if step < 3 else 0.0,  # BUG: 0 instead of 1 after warmup
)
loss_fn = nn.MSELoss()
data = c.batches(x, t)
for _step in range(args.steps):
    xb, tb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), tb)
    loss.backward()
    optimizer.step()
    scheduler.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
