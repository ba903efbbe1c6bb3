"""Variants: ``nll_loss`` imported as a bare function, called in a helper on raw scores; a
custom nn.Module with Linear(bias=True) straight into BatchNorm1d.

Rules: nll-on-raw-scores, bias-before-batchnorm
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import nll_loss


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(c.FEATURES, 32)  # BUG: bias=True feeding a BatchNorm
        self.bn = nn.BatchNorm1d(32)
        self.out = nn.Linear(32, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.fc(x))))


def loss_of(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return nll_loss(model(xb), yb)  # BUG: no log_softmax


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_of(model, xb, yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
