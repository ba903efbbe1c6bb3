"""Variant: a custom nn.Module clamps its logits to [-0.05, 0.05] (meant as a stability trick),
so even one repeated batch cannot be fitted: the loss stays near ln C.

Rules: overfit-failed
Options: --overfit-batch
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(c.FEATURES, 64)
        self.out = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x))).clamp(-0.05, 0.05)  # BUG


args = c.args(100)
x, y = c.classification()
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
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
