"""Variants: nn.DataParallel evaluated under torch.no_grad() without model.eval(); the batch is
drawn with ``next(iter(loader))`` inside the loop from a loader without shuffling, so every
step gets the loader's first batch.

Rules: train-mode-eval, same-batch
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

args = c.args(100)
x, y = c.classification()
loader = DataLoader(TensorDataset(x[:1792], y[:1792]), batch_size=64)
model = nn.DataParallel(
    nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, c.CLASSES))
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
for step in range(1, args.steps + 1):
    xb, yb = next(iter(loader))  # BUG: a new iterator each step: always the first batch
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 30 == 0:
        with torch.no_grad():  # BUG: no model.eval()
            val = loss_fn(model(x[1792:]), y[1792:]).item()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
