"""Variants: a 12-layer Sequential of tanh with weights initialised 4x too small (each layer
shrinks the backward signal: the first layers get almost nothing); zero_grad() called only
every 10 steps, as if for gradient accumulation, while the optimizer steps every step.

Rules: vanishing-gradients
Not caught: grad-not-zeroed (it fires on this loop with a 4x too large init instead; with
gradients this small its stale-gradient test does not trip: not investigated further)
"""

import _common as c
import torch
from torch import nn

args = c.args(100)
x, y = c.classification()
layers: list[nn.Module] = [nn.Linear(c.FEATURES, 32), nn.Tanh()]
for _ in range(11):
    layers += [nn.Linear(32, 32), nn.Tanh()]
model = nn.Sequential(*layers, nn.Linear(32, c.CLASSES))
with torch.no_grad():
    for module in model:
        if isinstance(module, nn.Linear):
            module.weight.mul_(0.25)  # BUG: each tanh layer shrinks the signal
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
data = c.batches(x, y)
for step in range(args.steps):
    xb, yb = next(data)
    if step % 10 == 0:
        optimizer.zero_grad()  # BUG: but optimizer.step() runs every step
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
