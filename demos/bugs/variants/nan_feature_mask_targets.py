"""Variants: a preprocessing helper takes log() of a feature column that has negative values
(NaN inputs, custom nn.Module); segmentation-style mask targets in 0..255 (not rescaled to
[0, 1]) go to binary_cross_entropy_with_logits imported as a bare function.

Rules: nonfinite-input, labels-out-of-range
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits


def preprocess(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, 3] = torch.log(x[:, 3])  # BUG: the column has negative values: NaN
    return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(c.FEATURES, 32)
        self.out = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)))


args = c.args(100)
x, _ = c.classification()
masks = (x[:, :8] > 0).float() * 255  # BUG: 0/255 pixels, never divided by 255
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
data = c.batches(preprocess(x), masks)
for _step in range(args.steps):
    xb, mb = next(data)
    optimizer.zero_grad()
    loss = binary_cross_entropy_with_logits(model(xb), mb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
