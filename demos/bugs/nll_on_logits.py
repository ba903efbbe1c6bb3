"""Bug: NLLLoss on raw scores (no log_softmax in the model).

Rule: nll-on-raw-scores.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))  # BUG
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
loss_fn = nn.NLLLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
