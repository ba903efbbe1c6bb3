"""Variant: a warmup-then-decay schedule written as one LambdaLR with the base on the wrong
side of 1 (1.06 ** step instead of 0.94 ** step): the learning rate keeps growing and a custom
nn.Module classifier, trained with cross_entropy imported as a bare function, climbs away from
where it started over tens of steps, finite all the way (no inf to catch it earlier).

Rules: loss-diverging
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import cross_entropy


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(c.FEATURES, 32)
        self.head = nn.Linear(32, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


args = c.args(100)
x, y = c.classification()
model = Classifier()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.06**step)  # BUG: 0.94
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    loss = cross_entropy(model(xb), yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
