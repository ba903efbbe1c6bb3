"""A classifier on synthetic data: the everyday training loop tuidebug is built for.

What it shows: a ``TensorDataset`` behind a shuffling ``DataLoader``, a model that mixes several
layer types (Linear, BatchNorm1d, ReLU, Dropout, Conv1d, GELU, LayerNorm), ``CrossEntropyLoss``,
``torch.optim.AdamW`` with a cosine learning-rate schedule, epochs that loop until ``--steps``
optimizer steps are done, and a periodic validation pass under ``model.eval()`` +
``torch.no_grad()``. The script never imports tuidebug: ``tuidebug run demos/classifier.py``
finds the model, the optimizer's step and the loss through torch's own hooks.

The data are 10 classes over 32 features, labelled by a fixed random nonlinear rule plus noise,
so the loss falls quickly and then keeps creeping down. Everything is generated from ``--seed``;
nothing is downloaded.

Run it::

    python demos/classifier.py --steps 500
    tuidebug run demos/classifier.py --steps 500 --sleep 0.02
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from _progress import Progress
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

N_FEATURES = 32
N_CLASSES = 10


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples labelled by a fixed random two-layer rule (fixed by ``seed``) plus noise."""
    rule = torch.Generator().manual_seed(seed)
    w1 = torch.randn(N_FEATURES, 32, generator=rule) / math.sqrt(N_FEATURES)
    w2 = torch.randn(32, N_CLASSES, generator=rule) / math.sqrt(32)
    x = torch.randn(n, N_FEATURES, generator=rule)
    logits = (torch.tanh(x @ w1 * 1.5) @ w2 + 0.5 * x[:, :N_CLASSES]) * 3.0
    logits = logits + 0.3 * torch.randn(n, N_CLASSES, generator=rule)
    return x, logits.argmax(dim=1)


class Classifier(nn.Module):
    """A Linear + BatchNorm stem, a Conv1d over the hidden units as a signal, a LayerNorm head."""

    def __init__(self, hidden: int = 128, channels: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Linear(N_FEATURES, hidden, bias=False),  # BatchNorm's shift replaces the bias
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=2),
            nn.GELU(),
        )
        flat = channels * (hidden // 2)
        self.head = nn.Sequential(
            nn.LayerNorm(flat),
            nn.Linear(flat, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, N_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.conv(h.unsqueeze(1)).flatten(1)
        return self.head(h)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module) -> tuple[float, float]:
    """Mean loss and accuracy over ``loader`` in eval mode; leaves the model in train mode."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        total_loss += float(loss_fn(logits, y)) * len(y)
        correct += int((logits.argmax(dim=1) == y).sum())
        count += len(y)
    model.train()
    return total_loss / count, correct / count


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=200, help="0 disables validation")
    parser.add_argument("--samples", type=int, default=8000, help="training samples")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    x, y = make_data(args.samples + 1000, args.seed)
    train = TensorDataset(x[: args.samples], y[: args.samples])
    val = TensorDataset(x[args.samples :], y[args.samples :])
    g = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, generator=g, drop_last=True
    )
    val_loader = DataLoader(val, batch_size=500)

    model = Classifier()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(args.steps, 1), eta_min=args.lr * 0.05
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"classifier: {len(train)} train / {len(val)} val samples, {N_CLASSES} classes, "
        f"{n_params} parameters, {args.steps} steps",
        flush=True,
    )

    progress = Progress(args.steps)
    model.train()
    step, epoch, loss_value, val_acc = 0, 0, float("nan"), float("nan")
    while step < args.steps:
        epoch += 1
        for xb, yb in train_loader:
            lr = scheduler.get_last_lr()[0]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = loss.item()
            progress.update(step, loss_value, lr, extra=f"  epoch {epoch}")
            if args.eval_every > 0 and (step % args.eval_every == 0 or step == args.steps):
                val_loss, val_acc = evaluate(model, val_loader, loss_fn)
                progress.line(
                    f"eval  step {step:>6}  val loss {val_loss:.4f}  val acc {val_acc:6.1%}"
                )
            if args.sleep > 0:
                time.sleep(args.sleep)
            if step >= args.steps:
                break

    extra = "" if math.isnan(val_acc) else f", val acc {val_acc:.1%}"
    progress.finish(step, loss_value, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
