"""Variants: a conv classifier whose last bias is initialised to favour one class by far, with
nn.CrossEntropyLoss; a .detach() inside forward cuts the conv block off the graph.

Rules: initial-loss, param-no-grad
"""

import _common as c
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * c.FEATURES, 32)
        self.out = nn.Linear(32, c.CLASSES)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([30.0, 0.0, 0.0, 0.0]))  # BUG: confident init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.unsqueeze(1))).flatten(1).detach()  # BUG: cuts the graph
        return self.out(torch.relu(self.fc(h)))


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
