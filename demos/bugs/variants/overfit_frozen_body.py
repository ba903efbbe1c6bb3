"""Variant: a "fine-tuning" script freezes everything but a 1-unit bottleneck head on a random
(untrained) body, so one repeated batch cannot be fitted.

Rules: overfit-failed
Options: --overfit-batch
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

args = c.args(100)
x, y = c.classification()
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
body = nn.Sequential(nn.Linear(c.FEATURES, 1), nn.ReLU())
head = nn.Linear(1, c.CLASSES)
for p in body.parameters():
    p.requires_grad_(False)  # BUG: the "pretrained" body is random, and a width-1 bottleneck
model = nn.Sequential(body, head)
optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
step = 0
while step < args.steps:
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
print(f"done: {step} steps, loss {loss.item():.4f}")
