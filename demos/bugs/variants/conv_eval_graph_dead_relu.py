"""Variants: a small Conv2d network evaluated at each epoch's end (model.eval(), a loop over
validation batches, .item() of each loss) with no torch.no_grad(); its conv layer's biases are
initialised very negative, so the ReLU after it is dead.

Rules: eval-builds-graph, dead-relu
"""

import _common as c
import torch
from torch import nn

args = c.args(100)
x, y = c.classification()
images = x.reshape(-1, 1, 4, 4)
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(16 * 16, c.CLASSES),
)
with torch.no_grad():
    model[0].bias.fill_(-20.0)  # BUG: every unit of the ReLU starts (and stays) dead
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(images[:1600], y[:1600])
for step in range(1, args.steps + 1):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 25 == 0:  # the end of an epoch of 25 batches
        model.eval()
        # BUG: no torch.no_grad() around the validation batches
        val = [
            loss_fn(model(images[i : i + 64]), y[i : i + 64]).item() for i in range(1600, 2048, 64)
        ]
        model.train()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
