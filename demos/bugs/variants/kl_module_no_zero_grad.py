"""Variants: nn.KLDivLoss in a helper gets log-probabilities as its target (log_target left
False); a custom nn.Module trained with model.zero_grad() called once, before the loop only.

Rules: logprobs-as-probs, grad-not-zeroed
"""

import _common as c
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(c.FEATURES, 32)
        self.b = nn.Linear(32, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.b(torch.relu(self.a(x))), dim=1)


kl = nn.KLDivLoss(reduction="batchmean")


def distill_loss(student_logp: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    return kl(student_logp, torch.log_softmax(teacher_scores, dim=1))  # BUG: log_target=False


args = c.args(100)
x, _ = c.classification()
teacher = 0.3 * torch.randn(c.FEATURES, c.CLASSES)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
data = c.batches(x, x)
model.zero_grad()  # BUG: once, before the loop; never again
for _step in range(args.steps):
    xb, _ = next(data)
    loss = distill_loss(model(xb), xb @ teacher)
    loss.backward()
    optimizer.step()
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
