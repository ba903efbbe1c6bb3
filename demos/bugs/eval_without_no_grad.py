"""Bug: validation runs under model.eval() but without torch.no_grad(): it builds a graph.

Rule: eval-builds-graph.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(
    nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, c.CLASSES)
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
        model.eval()
        val = loss_fn(model(x[1792:]), y[1792:])  # BUG: no torch.no_grad()
        model.train()
print(f"done: {args.steps} steps, loss {loss.item():.4f}, val {val.item():.4f}")
