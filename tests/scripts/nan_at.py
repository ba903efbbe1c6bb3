"""A model whose middle layer produces a NaN at a known step: `nan_at.py STEPS NAN_STEP`."""

from __future__ import annotations

import sys
import time

import torch


class Fragile(torch.nn.Module):
    """Passes its input through, except at one step where it turns it into NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.nan_at = int(sys.argv[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * float("nan") if self.calls == self.nan_at else x


def main() -> None:
    steps = int(sys.argv[1])
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), Fragile(), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 8)
    y = x.sum(1, keepdim=True)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(0.01)
    print("done", flush=True)


if __name__ == "__main__":
    main()
