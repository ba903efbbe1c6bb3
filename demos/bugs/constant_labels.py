"""Bug: the labels are looked up by class name, but the map's keys are lower case and the data's
names are capitalised: every lookup falls back to the default, 0, and every label is 0.

Rule: constant-labels.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
names = ["Cat", "Dog", "Bird", "Fish"]
raw = [names[int(i)] for i in y]  # the labels as the data file has them
label_of = {"cat": 0, "dog": 1, "bird": 2, "fish": 3}
labels = torch.tensor([label_of.get(name, 0) for name in raw])  # BUG: name.lower()
model = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.ReLU(), nn.Linear(64, c.CLASSES))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, labels)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
