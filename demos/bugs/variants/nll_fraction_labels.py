"""Variant: the labels are class indices already, and a "normalisation" divides them by the
number of classes before the cast to long: every label truncates to 0. A custom module ending in
log_softmax, nll_loss called as a function, batches from a DataLoader.

Rules: constant-labels
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(c.FEATURES, 32)
        self.out = nn.Linear(32, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.out(torch.tanh(self.hidden(x))), dim=1)


args = c.args(100)
x, y = c.classification()
labels = (y.float() / c.CLASSES).long()  # BUG: y is already 0..CLASSES-1
loader = DataLoader(TensorDataset(x, labels), batch_size=64, shuffle=True)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
step = 0
while step < args.steps:
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = nn.functional.nll_loss(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
print(f"done: {step} steps, loss {loss.item():.4f}")
