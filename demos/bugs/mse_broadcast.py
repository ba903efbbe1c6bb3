"""Bug: the model outputs (N, 1), the target is (N,): MSELoss broadcasts them to (N, N).

Rule: loss-broadcast (torch's own UserWarning is caught and shown).
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.regression()
y = y.squeeze(1)  # BUG: the target lost its last dimension
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.MSELoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
