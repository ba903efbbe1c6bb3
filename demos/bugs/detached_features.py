"""Bug: a stray .detach() cuts the graph: the encoder never gets a gradient.

Rule: param-no-grad.
"""

import _common as c
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU())
        self.head = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x).detach()  # BUG: left over from a feature-extraction experiment
        return self.head(features)


args = c.args()
x, y = c.classification()
model = Model()
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
