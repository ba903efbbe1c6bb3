"""Bug: a layer is added to the model after the optimizer was created: nothing updates it.

Rule: param-not-in-optimizer.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU())
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
model.append(nn.Linear(64, c.CLASSES))  # BUG: after the optimizer took model.parameters()
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
