"""Bug: a deep linear-ish stack initialized with std 1: activations and gradients blow up.

Rule: exploding-gradients.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.regression()
layers: list[nn.Module] = []
for i in range(6):
    layer = nn.Linear(c.FEATURES if i == 0 else 64, 64)
    nn.init.normal_(layer.weight, std=1.0)  # BUG: ignores fan-in (should be ~1/sqrt(64))
    layers += [layer, nn.LeakyReLU(0.5)]
model = nn.Sequential(*layers, nn.Linear(64, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-12)
loss_fn = nn.MSELoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4g}")
