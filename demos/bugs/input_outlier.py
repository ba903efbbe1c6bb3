"""Bug: missing values of feature 2 were written as -999 in the data file and read as numbers:
about 1 row in 200 has a value a thousand standard deviations away from the others.

Rule: input-outlier.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
missing = torch.rand(len(x), generator=torch.Generator().manual_seed(1)) < 0.005
x[missing, 2] = -999.0  # BUG: a sentinel left in; should be a flag plus an imputed value
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
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
