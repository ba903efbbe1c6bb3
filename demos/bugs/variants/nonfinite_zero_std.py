"""Variant: a helper standardises each batch's targets by their standard deviation; one batch
in the loop has a constant target, whose std is 0 (0/0 = NaN).

Rules: loss-nonfinite
"""

import _common as c
import torch
from torch import nn


def standardise(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean()) / t.std()  # BUG: no epsilon, and std is 0 for a constant batch


args = c.args(100)
x, t = c.regression()
t[128:192] = 0.5  # a run of identical targets: batch 3 of the unshuffled loop
model = nn.Sequential(nn.Linear(c.FEATURES, 32), nn.GELU(), nn.Linear(32, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.MSELoss()
for step in range(args.steps):
    i = (step * 64) % 2048
    xb, tb = x[i : i + 64], t[i : i + 64]
    optimizer.zero_grad()
    loss = loss_fn(model(xb), standardise(tb))
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
