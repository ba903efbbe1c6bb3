"""Bug: the validation pass uses no_grad but forgets model.eval(): dropout and BatchNorm stay on.

Rule: train-mode-eval.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(
    nn.Linear(c.FEATURES, 64, bias=False),
    nn.BatchNorm1d(64),
    nn.ReLU(),
    nn.Dropout(0.3),
    nn.Linear(64, c.CLASSES),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x[:1792], y[:1792])
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 5 == 0:
        with torch.no_grad():  # BUG: no model.eval() before, no model.train() after
            val = loss_fn(model(x[1792:]), y[1792:])
print(f"done: {args.steps} steps, loss {loss.item():.4f}, val {val.item():.4f}")
