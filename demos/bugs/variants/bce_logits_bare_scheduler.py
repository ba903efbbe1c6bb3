"""Variants: ``binary_cross_entropy_with_logits`` imported under another name is given
torch.sigmoid() of the scores; a CosineAnnealingLR is created and never stepped.

Rules: sigmoid-into-bce-logits, lr-never-changes
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

args = c.args(100)
x, y = c.classification()
target = (y == 0).float()
model = nn.Sequential(nn.Linear(c.FEATURES, 32), nn.Tanh(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
data = c.batches(x, target)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = bce(torch.sigmoid(model(xb)).squeeze(1), yb)  # BUG: the loss applies the sigmoid
    loss.backward()
    optimizer.step()
    # BUG: scheduler.step() is missing
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
