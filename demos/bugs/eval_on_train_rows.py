"""Bug: the validation rows are cut from the same tensor the training rows come from, and the
two ranges overlap: val = x[1536:] while training uses x[:1792] (256 rows are in both). The
validation score is measured partly on rows the model trained on.

Rule: train-eval-overlap.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
train_x, train_y = x[:1792], y[:1792]
val_x, val_y = x[1536:], y[1536:]  # BUG: should start at 1792, where training stops
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(train_x, train_y)
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 14 == 0:  # an evaluation off the sampled steps, as at an epoch's end
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(val_x), val_y)
        model.train()
print(f"done: {args.steps} steps, loss {loss.item():.4f}, val {val.item():.4f}")
