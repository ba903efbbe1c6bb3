"""Variants: a two-headed model, one trunk. The binary head's target thresholds a score in
[0, 1] at 50, as if it were a percentage: every target is 0 (BCEWithLogitsLoss on constant
labels). The 4-class head's labels come from bin edges made for values in [0, 1] applied to
values in [0, 0.7]: the top bin, class 3, never comes.

Rules: constant-labels, missing-class
"""

import _common as c
import torch
from torch import nn


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU())
        self.binary = nn.Linear(64, 1)
        self.level = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.binary(h).squeeze(1), self.level(h)


args = c.args(100)
x, _ = c.classification()
score = torch.sigmoid(x[:, 0])  # in [0, 1]
flag = (score > 50).float()  # BUG: a threshold for percentages; should be 0.5
value = 0.7 * torch.sigmoid(x[:, 1])  # in [0, 0.7]
level = torch.bucketize(value, torch.tensor([0.25, 0.5, 0.75]))  # BUG: edges for [0, 1]
model = TwoHeads()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss()
g = torch.Generator().manual_seed(0)
for _step in range(args.steps):
    idx = torch.randint(0, len(x), (64,), generator=g)
    optimizer.zero_grad()
    out_flag, out_level = model(x[idx])
    loss = bce(out_flag, flag[idx]) + ce(out_level, level[idx])
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
