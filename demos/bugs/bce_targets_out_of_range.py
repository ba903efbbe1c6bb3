"""Bug: a 3-class label (0, 1, 2) fed to a binary loss: targets of 2 are silently accepted.

Rule: labels-out-of-range.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
target = y.clamp(max=2).float().unsqueeze(1)  # BUG: 3 classes, but a binary loss
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.BCEWithLogitsLoss()
data = c.batches(x, target)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
