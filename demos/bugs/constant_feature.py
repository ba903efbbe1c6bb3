"""Bug: feature 5 is a percentage stored as an integer (0..99), turned into a fraction with
integer division: pct // 100 is 0 in every row, and the model never sees the feature.

Rule: constant-input.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
percent = torch.randint(0, 100, (len(x),))  # as the data file has it
x[:, 5] = (percent // 100).float()  # BUG: should be percent / 100
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
