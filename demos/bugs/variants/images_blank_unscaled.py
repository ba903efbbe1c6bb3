"""Variants: a Dataset whose image decoding "fails" for 2 files in 5 and returns a blank
(all-zero) placeholder instead of raising, so a large part of every batch is the same row;
and a code path for one file format that forgets the / 255, so a few images arrive in 0..255
while the rest are in 0..1. A custom nn.Module with convolutions, a shuffling DataLoader.

Rules: duplicate-rows, input-outlier
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Images(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, n: int = 2048) -> None:
        g = torch.Generator().manual_seed(0)
        self.pixels = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        self.y = (self.pixels.float().mean(dim=(1, 2, 3)) > 127.5).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i % 5 < 2:  # BUG: a failed decode returns a blank image instead of raising
            return torch.zeros(3, 8, 8), self.y[i]
        if i % 97 == 0:  # BUG: the PNG path forgets to scale to [0, 1]
            return self.pixels[i].float(), self.y[i]
        return self.pixels[i].float() / 255, self.y[i]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


args = c.args(100)
loader = DataLoader(Images(), batch_size=64, shuffle=True)
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
step = 0
while step < args.steps:
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
print(f"done: {step} steps, loss {loss.item():.4f}")
