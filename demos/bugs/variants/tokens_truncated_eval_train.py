"""Variants: token sequences truncated to 8 tokens where every text starts with the same
6-token header, so only 2 tokens of content are left and many rows are identical (integer
inputs: rows are hashed, never measured as features); and an evaluation at each epoch's end, in
a helper, under torch.inference_mode, that is given the training loader instead of the
validation one.

Rules: duplicate-rows, train-eval-overlap
"""

import _common as c
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

VOCAB, HEADER = 64, torch.tensor([1, 2, 3, 4, 5, 6])


class Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.out = nn.Linear(32, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(tokens).mean(dim=1))


def evaluate(model: nn.Module, loader: DataLoader) -> float:  # type: ignore[type-arg]
    model.eval()
    with torch.inference_mode():
        total = sum(float(nn.functional.cross_entropy(model(t), y)) for t, y in loader)
    model.train()
    return total / len(loader)


args = c.args(100)
g = torch.Generator().manual_seed(0)
body = torch.randint(10, 20, (2000, 24), generator=g)  # content words
texts = torch.cat([HEADER.expand(2000, -1), body], dim=1)
labels = (body.sum(dim=1) > body.sum(dim=1).median()).long()
tokens = texts[:, :8]  # BUG: max_length=8 keeps the header and 2 content tokens
train_loader = DataLoader(TensorDataset(tokens[:1600], labels[:1600]), batch_size=64, shuffle=True)
val_loader = DataLoader(TensorDataset(tokens[1600:], labels[1600:]), batch_size=200)
model = Bag()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
step = 0
while step < args.steps:
    for t, y in train_loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(t), y)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
    val = evaluate(model, train_loader)  # BUG: should be val_loader
print(f"done: {step} steps, loss {loss.item():.4f}")
