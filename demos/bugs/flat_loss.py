"""Bug: a learning rate of 1e-9 (a typo for 1e-3): nothing moves.

Rules: loss-flat (and update-ratio); with --overfit-batch: overfit-failed.
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

args = c.args()
x, y = c.classification()
loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)  # BUG
loss_fn = nn.CrossEntropyLoss()
step = 0
while step < args.steps:
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
