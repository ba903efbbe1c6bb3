"""Variants: an evaluation at each epoch's end, in a helper, under model.eval() but with no
torch.no_grad() (the step it runs after is not a sampled one); a custom nn.Module whose forward
ends in a softmax, fed to a cross_entropy imported as a bare function.

Rules: eval-builds-graph, softmax-into-ce
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import cross_entropy


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(c.FEATURES, 64)
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(self.drop(torch.relu(self.hidden(x)))), dim=1)  # BUG


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(x), 64):  # BUG: no torch.no_grad(): every batch keeps its graph
        total += cross_entropy(model(x[i : i + 64]), y[i : i + 64]).item()
    model.train()
    return total


args = c.args(100)
x, y = c.classification()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
train_x, train_y = x[:1728], y[:1728]  # 27 batches an epoch: epoch ends at steps 27, 54, 81
order = torch.arange(len(train_x))
step = 0
while step < args.steps:
    for i in range(0, len(train_x), 64):
        idx = order[i : i + 64]
        optimizer.zero_grad()
        loss = cross_entropy(model(train_x[idx]), train_y[idx])
        loss.backward()
        optimizer.step()
        step += 1
    val = evaluate(model, x[1728:], y[1728:])
print(f"done: {step} steps, loss {loss.item():.4f}")
