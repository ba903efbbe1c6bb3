"""Variants: a compute_loss() helper applies F.softmax before nn.CrossEntropyLoss, on a conv
network; the custom nn.Module defines an auxiliary head its forward never uses.

Rules: softmax-into-ce, param-no-grad
"""

import _common as c
import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 5, padding=2)
        self.head = nn.Linear(8 * c.FEATURES, c.CLASSES)
        self.aux_head = nn.Linear(8 * c.FEATURES, 2)  # BUG: never called in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.unsqueeze(1))).flatten(1)
        return self.head(h)


criterion = nn.CrossEntropyLoss()


def compute_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return criterion(F.softmax(model(xb), dim=-1), yb)  # BUG: CE wants logits


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = compute_loss(model, xb, yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
