"""Variants: a custom nn.Module whose output layer is scaled up at init (over-confident from the
start) with cross_entropy imported as a bare function; a warmup helper computes the rate with
integer division, which is 0 for every step of the warmup.

Rules: initial-loss, lr-zero
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import cross_entropy


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(c.FEATURES, 64)
        self.out = nn.Linear(64, c.CLASSES)
        with torch.no_grad():
            self.out.weight.mul_(40.0)  # BUG: huge logits before any training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)))


def warmup_lr(step: int, base: float = 1e-3, warmup: int = 500) -> float:
    return base * (step // warmup)  # BUG: integer division: 0 until step 500


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
data = c.batches(x, y)
for step in range(args.steps):
    for group in optimizer.param_groups:
        group["lr"] = warmup_lr(step)
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
