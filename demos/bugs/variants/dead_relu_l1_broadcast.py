"""Variants: a custom nn.Module whose hidden Linear has its biases initialised at -10 (the ReLU
after it is dead); nn.L1Loss in a helper compares (N, 1) predictions with (N,) targets.

Rules: dead-relu, loss-broadcast
"""

import _common as c
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(c.FEATURES, 64)
        self.act = nn.ReLU()
        self.out = nn.Linear(64, 1)
        nn.init.constant_(self.fc.bias, -10.0)  # BUG

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.fc(x)))


l1 = nn.L1Loss()


def loss_of(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return l1(pred, target)  # BUG: (64, 1) against (64,)


args = c.args(100)
x, t = c.regression()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
data = c.batches(x, t.squeeze(1))
for _step in range(args.steps):
    xb, tb = next(data)
    optimizer.zero_grad()
    loss = loss_of(model(xb), tb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
