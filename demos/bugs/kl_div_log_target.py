"""Bug: distillation with kl_div given the teacher's log-probabilities as target (log_target=False).

Rule: logprobs-as-probs.
"""

import _common as c
import torch
import torch.nn.functional as F
from torch import nn

args = c.args()
x, _ = c.classification()
teacher = nn.Sequential(nn.Linear(c.FEATURES, 64), nn.Tanh(), nn.Linear(64, c.CLASSES))
student = nn.Sequential(nn.Linear(c.FEATURES, 16), nn.ReLU(), nn.Linear(16, c.CLASSES))
optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
data = c.batches(x, x)
for _step in range(args.steps):
    xb, _ = next(data)
    with torch.no_grad():
        soft = F.log_softmax(teacher(xb), dim=1)
    optimizer.zero_grad()
    loss = F.kl_div(F.log_softmax(student(xb), dim=1), soft, reduction="batchmean")  # BUG
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
