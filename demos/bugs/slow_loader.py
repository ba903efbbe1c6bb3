"""Bug: per-sample work in Dataset.__getitem__ and no workers: the step mostly waits for data.

Rule: data-bottleneck.
"""

import time

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class SlowDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(0.0005)  # BUG: stands for decoding/augmenting on the main process
        return self.x[i], self.y[i]


args = c.args(default_steps=40)
x, y = c.classification()
loader = DataLoader(SlowDataset(x, y), batch_size=32, shuffle=True)  # num_workers=0
model = nn.Sequential(nn.Linear(c.FEATURES, 32), nn.ReLU(), nn.Linear(32, c.CLASSES))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
step = 0
while step < args.steps:
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
