"""Bug: optimizer.zero_grad() is never called, so gradients pile up step after step.

Rule: grad-not-zeroed.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    loss = loss_fn(model(xb), yb)
    loss.backward()  # BUG: no optimizer.zero_grad() anywhere in the loop
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
