"""Clean twin of the data rules on images: a small CNN on synthetic RGB images with a black
frame (the frame's pixels are 0 in every image, the channels are not), normalised per channel
with the training split's statistics; one random_split, made once, and an evaluation at each
epoch's end under torch.inference_mode in eval mode on the held-out split, through a
DataLoader.

Rules that must stay quiet: train-eval-overlap, duplicate-rows, constant-input, input-outlier,
constant-labels, missing-class (tests/checks/test_check_gallery.py, CLEAN).
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)
g = torch.Generator().manual_seed(args.seed)

n, classes = 1536, 4
y = torch.randint(0, classes, (n,), generator=g)
images = torch.rand(n, 3, 16, 16, generator=g) * 0.5
for c in range(classes):  # each class brightens one quadrant of one channel
    rows = y == c
    images[rows, c % 3, (c // 2) * 8 : (c // 2) * 8 + 8, (c % 2) * 8 : (c % 2) * 8 + 8] += 0.5
frame = torch.ones(16, 16, dtype=torch.bool)
frame[2:-2, 2:-2] = False
images[:, :, frame] = 0.0  # a black frame: constant pixels, not a constant channel
train, val = random_split(TensorDataset(images, y), [0.8, 0.2], generator=g)
train_images = images[torch.tensor(train.indices)]
mean = train_images.mean(dim=(0, 2, 3), keepdim=True)[0]
std = train_images.std(dim=(0, 2, 3), keepdim=True)[0]


def normalise(batch: torch.Tensor) -> torch.Tensor:
    return (batch - mean) / std


train_loader = DataLoader(train, batch_size=32, shuffle=True, generator=g)
val_loader = DataLoader(val, batch_size=128)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(16, classes),
)
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.CrossEntropyLoss()
step, accuracy = 0, float("nan")
while step < args.steps:
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = loss_fn(model(normalise(xb)), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
    model.eval()
    with torch.inference_mode():
        right = sum(int((model(normalise(xb)).argmax(1) == yb).sum()) for xb, yb in val_loader)
    model.train()
    accuracy = right / len(val)
print(f"done: {step} steps, loss {loss.item():.4f}, val accuracy {accuracy:.1%}")
