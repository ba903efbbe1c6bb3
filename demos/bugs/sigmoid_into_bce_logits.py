"""Bug: a sigmoid before BCEWithLogitsLoss (which applies its own sigmoid).

Rule: sigmoid-into-bce-logits.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
target = (y == 0).float().unsqueeze(1)
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.BCEWithLogitsLoss()
data = c.batches(x, target)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(torch.sigmoid(model(xb)), yb)  # BUG: the loss applies the sigmoid itself
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
