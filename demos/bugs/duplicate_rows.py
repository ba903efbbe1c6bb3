"""Bug: the minibatch indices are drawn from range(batch_size) instead of range(len(x)): every
batch is made of the first 64 rows, drawn with replacement, so about a third of each batch are
copies of rows already in it (and most of the data is never seen).

Rule: duplicate-rows.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
batch = 64
for _step in range(args.steps):
    idx = torch.randint(0, batch, (batch,))  # BUG: should be torch.randint(0, len(x), ...)
    optimizer.zero_grad()
    loss = loss_fn(model(x[idx]), y[idx])
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
