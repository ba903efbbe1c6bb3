"""A data-dependent NaN at a known step: `layers_nan_data.py STEPS BAD_STEP forward|backward`.

``model.feature`` takes sqrt(x[:, 0] * scale) of the raw batch. At BAD_STEP one value of that
column is -1 (forward: a NaN output) or 0 (backward: 0/0, a NaN gradient for ``scale``). The
first layer with parameters is ``model.encoder.0``: after the update of BAD_STEP its weights are
NaN too, so a locator that looks only at later steps names it instead of ``model.feature``.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn


class SqrtFeature(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale).sqrt()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(7, 16), nn.Tanh())
        self.feature = SqrtFeature()
        self.head = nn.Linear(17, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x[:, 1:])
        return self.head(torch.cat([h, self.feature(x[:, :1])], dim=1))


def main() -> None:
    steps, bad_step, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.005
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        x = torch.rand(32, 8, generator=gen) + 0.5
        if step == bad_step:
            x[3, 0] = -1.0 if mode == "forward" else 0.0
        loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(delay)
    print("done", flush=True)


if __name__ == "__main__":
    main()
