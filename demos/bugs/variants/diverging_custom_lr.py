"""Variants: a custom regression nn.Module trained by SGD with a learning rate far too high for
it (nn.MSELoss): the updates are far above ~1e-3 of the weights and the loss blows up to inf
by step ~17.

Rules: update-ratio, loss-nonfinite
Not caught: loss-diverging (it needs 20 finite losses; this one is inf before: the run is
reported by loss-nonfinite instead; between lr 0.05 and 0.08 it oscillates without diverging)
"""

import _common as c
import torch
from torch import nn


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(c.FEATURES, 32)
        self.b = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


args = c.args(100)
x, t = c.regression()
model = Regressor()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # BUG: too high
loss_fn = nn.MSELoss()
data = c.batches(3 * x, t)
for _step in range(args.steps):
    xb, tb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), tb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
