"""Bug: a learning rate just above the stable limit: the loss climbs steadily (but stays finite).

Rule: loss-diverging.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.regression()
model = nn.Linear(c.FEATURES, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=1.1)  # BUG: 2/lambda_max is about 1
loss_fn = nn.MSELoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
