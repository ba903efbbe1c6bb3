"""Bug: an over-confident initialization: the first loss is far above ln C.

Rule: initial-loss.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
with torch.no_grad():
    model[2].weight.mul_(30.0)  # BUG: "a bigger init learns faster"
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
