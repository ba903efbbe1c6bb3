"""Bug: a learning rate so large that the regression blows up to inf and NaN.

Rule: loss-nonfinite.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.regression()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=5.0)  # BUG
loss_fn = nn.MSELoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
