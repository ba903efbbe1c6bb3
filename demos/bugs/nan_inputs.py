"""Bug: a feature computed as log(count) where some counts are 0: -inf in the inputs.

Rule: nonfinite-input.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
counts = torch.randint(0, 20, (len(x), 1)).float()
x = torch.cat([x, torch.log(counts)], dim=1)  # BUG: log(0) = -inf
model = nn.Sequential(nn.Linear(c.FEATURES + 1, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
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
