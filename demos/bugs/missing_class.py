"""Bug: the data file is sorted by label, and the split takes the first 65% for training
without shuffling: class 3 is only in the validation rows, never in training.

Rule: missing-class.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
order = torch.argsort(y, stable=True)
x, y = x[order], y[order]  # the file as it was saved: sorted by label
cut = int(0.65 * len(x))
train_x, train_y = x[:cut], y[:cut]  # BUG: shuffle before splitting
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(train_x, train_y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
