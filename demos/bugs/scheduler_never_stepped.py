"""Bug: a cosine schedule is created but scheduler.step() is never called.

Rule: lr-never-changes.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()  # BUG: scheduler.step() is missing
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
