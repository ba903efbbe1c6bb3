"""Clean twin of the data rules on tabular data: everything here looks like a data mistake to a
naive check, and none is one.

- numeric features standardised with the training split's mean and std, and a heavy-tailed one
  (a log-normal "amount") log-transformed first: no input-outlier;
- a one-hot categorical feature with a rare category (0.3% of rows: its column is 0 in most
  sampled batches), a rare 0/1 flag and a mostly-zero count: no constant-input, no outlier;
- 1% of the rows are duplicated, as real data has some: far from heavy duplicate-rows;
- five classes, one of them rare (4%), all in training: no missing-class, no constant-labels;
- one permutation splits train and validation, evaluated each epoch (eval mode, no_grad) on
  the validation split only: no train-eval-overlap.

Rules that must stay quiet: train-eval-overlap, duplicate-rows, constant-input, input-outlier,
constant-labels, missing-class (tests/checks/test_check_gallery.py, CLEAN).
"""

import argparse

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)
g = torch.Generator().manual_seed(args.seed)

n = 4096
numeric = torch.randn(n, 8, generator=g)
amount = torch.exp(torch.randn(n, 1, generator=g))  # log-normal: a heavy right tail
category = torch.multinomial(
    torch.tensor([0.4, 0.3, 0.2, 0.077, 0.02, 0.003]), n, replacement=True, generator=g
)
one_hot = nn.functional.one_hot(category, 6).float()
flag = (torch.rand(n, 1, generator=g) < 0.02).float()
count = torch.poisson(torch.full((n, 1), 0.1), generator=g)
x = torch.cat([numeric, torch.log1p(amount), one_hot, flag, count], dim=1)
score = numeric[:, :5] + 0.5 * one_hot[:, :5] - torch.tensor([0.0, 0.0, 0.0, 0.0, 1.1])
y = score.argmax(dim=1)  # class 4 is rare
copies = torch.randint(0, n, (n // 100,), generator=g)
x, y = torch.cat([x, x[copies]]), torch.cat([y, y[copies]])  # some duplicates, as real data

order = torch.randperm(len(x), generator=g)  # one split, made once
train_idx, val_idx = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
mean, std = x[train_idx].mean(0), x[train_idx].std(0).clamp(min=1e-6)
dense = slice(0, 9)  # standardise the numeric columns, leave one-hot, flag and count as they are
x[:, dense] = (x[:, dense] - mean[dense]) / std[dense]


def loader(rows: torch.Tensor, size: int, shuffle: bool) -> DataLoader:  # type: ignore[type-arg]
    # Whole batches indexed at once (one x[idx], not `size` rows collated one by one): with a
    # model this small, per-row collation would make the loader the bottleneck.
    data = TensorDataset(x[rows], y[rows])
    order = RandomSampler(data, generator=g) if shuffle else range(len(data))
    return DataLoader(data, batch_size=None, sampler=BatchSampler(order, size, drop_last=False))


train, val = loader(train_idx, 64, True), loader(val_idx, 256, False)

model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 5))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
step, val_loss = 0, float("nan")
while step < args.steps:
    for xb, yb in train:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        step += 1
        if step >= args.steps:
            break
    model.eval()
    with torch.no_grad():
        val_loss = sum(float(loss_fn(model(xb), yb)) * len(yb) for xb, yb in val) / len(val_idx)
    model.train()
print(f"done: {step} steps, loss {loss.item():.4f}, val loss {val_loss:.4f}")
