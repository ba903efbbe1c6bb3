"""Variants: grayscale images made three-channel by writing the gray values into channel 0 of a
zero tensor (channels 1 and 2 stay 0: a constant channel of a 4-D input); and the validation
split drawn by a second random_split with another seed, so most validation images are also
training images. Evaluated at each epoch's end through a DataLoader, in eval mode, no_grad.

Rules: constant-input, train-eval-overlap
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

args = c.args(100)
g = torch.Generator().manual_seed(0)
gray = torch.rand(1200, 1, 12, 12, generator=g)
y = (gray[:, :, :6].mean(dim=(1, 2, 3)) > gray[:, :, 6:].mean(dim=(1, 2, 3))).long()
rgb = torch.zeros(1200, 3, 12, 12)
rgb[:, 0] = gray[:, 0]  # BUG: should be gray.expand(-1, 3, -1, -1)
data = TensorDataset(rgb, y)
train, _ = random_split(data, [0.8, 0.2], generator=torch.Generator().manual_seed(1))
_, val = random_split(data, [0.8, 0.2], generator=torch.Generator().manual_seed(2))  # BUG
train_loader = DataLoader(train, batch_size=32, shuffle=True)
val_loader = DataLoader(val, batch_size=120)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 2)
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
step = 0
while step < args.steps:
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
    model.eval()
    with torch.no_grad():
        accuracy = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in val_loader) / len(val)
    model.train()
print(f"done: {step} steps, loss {loss.item():.4f}")
