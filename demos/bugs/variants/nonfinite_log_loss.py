"""Variant: a hand-written loss takes the log of a ReLU output (a custom regression module):
exactly zero outputs give log(0) = -inf.

Rules: loss-nonfinite
"""

import _common as c
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(c.FEATURES, 16)
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.out(torch.relu(self.fc(x))))


def log_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((torch.log(pred) - torch.log(target.abs() + 1)) ** 2).mean()  # BUG: log(0)


args = c.args(100)
x, t = c.regression()
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
data = c.batches(x, t)
for _step in range(args.steps):
    xb, tb = next(data)
    optimizer.zero_grad()
    loss = log_error(model(xb), tb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
