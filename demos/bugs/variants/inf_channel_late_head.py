"""Variants: images standardised per channel by a helper, one channel constant (std 0: inf and
NaN inputs into a Conv2d); a new head is attached after the optimizer was created.

Rules: nonfinite-input, param-not-in-optimizer
"""

import _common as c
import torch
from torch import nn


def standardise(images: torch.Tensor) -> torch.Tensor:
    mean = images.mean(dim=(0, 2, 3), keepdim=True)
    std = images.std(dim=(0, 2, 3), keepdim=True)
    return (images - mean) / std  # BUG: no epsilon; channel 1 is constant


args = c.args(100)
x, y = c.classification()
images = torch.stack([x.reshape(-1, 4, 4), torch.full((len(x), 4, 4), 0.5)], dim=1)
images = standardise(images)
model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Flatten())
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
model.append(nn.Linear(8 * 16, c.CLASSES))  # BUG: the optimizer never sees this head
data = c.batches(images, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
