"""Variants: a model called through nn.DataParallel computes a validation loss inside each
training step, before backward, with no torch.no_grad() (its graph is built and dropped); a
Conv1d with a bias straight into BatchNorm1d.

Rules: eval-builds-graph, bias-before-batchnorm
"""

import _common as c
import torch
from torch import nn

args = c.args(100)
x, y = c.classification()
net = nn.Sequential(
    nn.Unflatten(1, (1, c.FEATURES)),
    nn.Conv1d(1, 8, 3, padding=1),  # BUG: bias=True cancelled by the BatchNorm
    nn.BatchNorm1d(8),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(8 * c.FEATURES, c.CLASSES),
)
model = nn.DataParallel(net)  # on a CPU machine it calls net directly
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x[:1792], y[:1792])
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    if step % 10 == 0:
        model.eval()
        val = loss_fn(model(x[1792:]), y[1792:]).item()  # BUG: no torch.no_grad()
        model.train()
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
