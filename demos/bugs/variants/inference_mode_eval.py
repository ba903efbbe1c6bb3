"""Variants: a validation helper at each epoch's end under torch.inference_mode(), with no
model.eval() (BatchNorm and Dropout in a custom nn.Module stay in train mode); nn.NLLLoss on
the raw scores of the last Linear (no log_softmax).

Rules: train-mode-eval, nll-on-raw-scores
"""

import _common as c
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(c.FEATURES, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3)
        )
        self.head = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # BUG for NLLLoss: raw scores, no log_softmax


criterion = nn.NLLLoss()


def validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():  # BUG: no model.eval() before, no model.train() after
        return criterion(model(x), y).item()


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
data = c.batches(x[:1792], y[:1792])
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 28 == 0:
        validate(model, x[1792:], y[1792:])
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
