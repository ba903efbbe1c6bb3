"""Variants: a hand-written SGD update in a helper adds the gradient instead of subtracting it
(no optimizer: the boundary is each backward); mse_loss imported as a bare function compares
(N, 1) predictions with (N,) targets.

Rules: loss-diverging, loss-broadcast
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import mse_loss


def sgd_step(model: nn.Module, lr: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p += lr * p.grad  # BUG: gradient ascent
            p.grad = None


args = c.args(100)
x, t = c.regression()
model = nn.Sequential(nn.Linear(c.FEATURES, 16), nn.Tanh(), nn.Linear(16, 1))
data = c.batches(x, t.squeeze(1))
for _step in range(args.steps):
    xb, tb = next(data)
    loss = mse_loss(model(xb), tb)  # BUG: (64, 1) against (64,) broadcasts to (64, 64)
    loss.backward()
    sgd_step(model, 0.01)
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
