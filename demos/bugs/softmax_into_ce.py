"""Bug: the model ends in a softmax and its output goes to CrossEntropyLoss (which wants logits).

Rule: softmax-into-ce.
"""

import _common as c
import torch
from torch import nn

args = c.args()
x, y = c.classification()
model = nn.Sequential(
    nn.Linear(c.FEATURES, 64),
    nn.ReLU(),
    nn.Linear(64, c.CLASSES),
    nn.Softmax(dim=1),  # BUG
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
data = c.batches(x, y)
for _step in range(args.steps):
    xb, yb = next(data)
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
