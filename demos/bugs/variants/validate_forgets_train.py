"""Variants: a validate() helper at the end of the first epoch puts a custom nn.Module (with
Dropout) in eval mode and nothing puts it back; distillation with kl_div imported as a bare
function, given the teacher's log-probabilities as its target.

Rules: eval-mode-training, logprobs-as-probs
"""

import _common as c
import torch
from torch import nn
from torch.nn.functional import kl_div, log_softmax


class Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c.FEATURES, 64)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(64, c.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()  # BUG: never set back to model.train()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


args = c.args(100)
x, y = c.classification()
teacher_w = 0.3 * torch.randn(c.FEATURES, c.CLASSES)
student = Student()
optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
data = c.batches(x, y)
for step in range(1, args.steps + 1):
    xb, _yb = next(data)
    teacher_logp = log_softmax(xb @ teacher_w, dim=1)
    optimizer.zero_grad()
    # BUG: the target is log-probabilities but log_target is left False
    loss = kl_div(log_softmax(student(xb), dim=1), teacher_logp, reduction="batchmean")
    loss.backward()
    optimizer.step()
    if step == 20:
        print(f"accuracy {validate(student, x[:256], y[:256]):.3f}")
print(f"done: {args.steps} steps, loss {loss.item():.4f}")
