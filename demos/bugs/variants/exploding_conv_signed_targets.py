"""Variants: a Conv1d binary classifier initialised with weights 8x too large (exploding
gradients); its nn.BCEWithLogitsLoss targets are -1/+1 (an SVM habit), not 0/1.

Rules: exploding-gradients, labels-out-of-range
"""

import _common as c
import torch
from torch import nn

args = c.args(100)
x, y = c.classification()
target = torch.where(y == 0, 1.0, -1.0)  # BUG: a binary loss needs targets in [0, 1]
model = nn.Sequential(
    nn.Unflatten(1, (1, c.FEATURES)),
    nn.Conv1d(1, 16, 3, padding=1),
    nn.ReLU(),
    nn.Conv1d(16, 16, 3, padding=1),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(16 * c.FEATURES, 1),
)
with torch.no_grad():
    for module in model:
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            module.weight.mul_(8.0)  # BUG
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
loss_fn = nn.BCEWithLogitsLoss()
data = c.batches(x, target)
for _step in range(args.steps):
    xb, tb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb).squeeze(1), tb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
