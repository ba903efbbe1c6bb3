"""Variants: StepLR stepped once an "epoch", but the epoch is counted in samples, so within the
run it is never stepped; a deep custom nn.Module of sigmoids: the first layers' gradients
vanish.

Rules: lr-never-changes, vanishing-gradients
"""

import _common as c
import torch
from torch import nn


class Sigmoids(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(c.FEATURES, 32)] + [nn.Linear(32, 32) for _ in range(9)]
        )
        self.out = nn.Linear(32, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.sigmoid(layer(x))  # BUG for depth: saturating, no normalization
        return self.out(x)


args = c.args(100)
x, y = c.classification()
model = Sigmoids()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
data = c.batches(x, y)
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % len(x) == 0:  # BUG: len(x) samples, not batches: never true in this run
        scheduler.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
