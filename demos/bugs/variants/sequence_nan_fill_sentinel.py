"""Variants: a GRU over (batch, time, feature) sequences. Feature 1 is parsed from strings
that all fail to parse (NaN), and torch.nan_to_num fills them with 0 (a constant feature of a
3-D input); feature 3 is a distance where "unknown" was written as 1e4, at about 1 time step
in 200.

Rules: constant-input, input-outlier
"""

import _common as c
import torch
from torch import nn

args = c.args(100)
g = torch.Generator().manual_seed(0)
n, steps_in_time = 2048, 20
seq = torch.randn(n, steps_in_time, 4, generator=g)
seq[:, :, 1] = torch.nan_to_num(torch.full((n, steps_in_time), float("nan")))  # BUG
unknown = torch.rand(n, steps_in_time, generator=g) < 0.005
seq[:, :, 3] = seq[:, :, 3].abs()
seq[:, :, 3][unknown] = 1e4  # BUG: a sentinel for "unknown distance"
target = (seq[:, :, 0].sum(dim=1) > 0).long()


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 16, batch_first=True)
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0][:, -1])


model = Tagger()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
data = c.batches(seq, target, size=32)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
