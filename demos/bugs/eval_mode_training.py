"""Bug: a baseline evaluation puts the model in eval mode, and nothing puts it back in train mode.

Rule: eval-mode-training.
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
model.eval()
with torch.no_grad():
    print(f"baseline loss {loss_fn(model(x[:256]), y[:256]).item():.4f}")
# BUG: model.train() is missing here
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
