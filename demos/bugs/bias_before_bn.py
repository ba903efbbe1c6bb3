"""Bug (a mild one): a convolution with a bias straight into BatchNorm, which cancels the bias.

Rule: bias-before-batchnorm.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(
    nn.Unflatten(1, (1, c.FEATURES)),
    nn.Conv1d(1, 8, kernel_size=3, padding=1),  # BUG: bias=True (the default) before BatchNorm
    nn.BatchNorm1d(8),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(8 * c.FEATURES, c.CLASSES),
)
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
