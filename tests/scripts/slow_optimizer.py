"""A loop whose optimizer step is deliberately slow: `slow_optimizer.py STEPS DELAY`.

``SlowSGD.step`` sleeps DELAY seconds before SGD's own update (standing in for a heavy
optimizer, such as one that gathers state across ranks); data is a tensor already in memory and
the model is tiny: the step-time breakdown must show the optimizer step as the largest phase.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02


class SlowSGD(torch.optim.SGD):
    def step(self, closure: Any = None) -> Any:
        time.sleep(delay)
        return super().step(closure)


torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = SlowSGD(model.parameters(), lr=0.01)
x = torch.randn(32, 8)
y = x.sum(1, keepdim=True)
for _ in range(steps):
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("done", flush=True)
