"""A loop whose DataLoader is deliberately slow: `slow_data.py STEPS DELAY`.

Each batch takes DELAY seconds to make (a sleep in the dataset's ``__getitem__``, one item a
batch), far longer than the tiny model's forward, backward and SGD step: the step-time
breakdown must show data wait as the largest phase.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02


class SlowData(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __len__(self) -> int:
        return steps

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(delay)
        g = torch.Generator().manual_seed(index)
        x = torch.randn(32, 8, generator=g)
        return x, x.sum(1, keepdim=True)


torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
# batch_size=None: each item is a batch already.
for x, y in DataLoader(SlowData(), batch_size=None):
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("done", flush=True)
