"""Bug: a deep stack of sigmoids: the first layers get almost no gradient.

Rule: vanishing-gradients.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
layers: list[nn.Module] = [nn.Linear(c.FEATURES, 32), nn.Sigmoid()]
for _ in range(10):
    layers += [nn.Linear(32, 32), nn.Sigmoid()]  # BUG: saturating activations, no normalization
model = nn.Sequential(*layers, nn.Linear(32, c.CLASSES))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
