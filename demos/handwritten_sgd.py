"""A training loop with no optimizer object: plain SGD written by hand.

What it shows: the loop many research scripts still use. There is no ``torch.optim`` optimizer
and no ``DataLoader``; each step draws a minibatch by indexing a shuffled permutation, calls
``loss.backward()``, and updates the weights itself::

    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
            p.grad = None

with momentum and a linear learning-rate decay also done by hand. Under
``tuidebug run demos/handwritten_sgd.py`` there is no optimizer step to hook, so the probe
finds the step boundary (and the loss) through the backward of the scalar loss instead.

The task is regression: 8 inputs, a target made of a few sines and products of them plus noise,
fitted by a small Tanh MLP with mean squared error. Everything is generated from ``--seed``.

Run it::

    python demos/handwritten_sgd.py --steps 1000
    tuidebug run demos/handwritten_sgd.py --steps 1000 --sleep 0.01
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _progress import Progress
from torch import nn

N_INPUTS = 8


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of a fixed smooth function of 8 inputs, plus a little noise."""
    rule = torch.Generator().manual_seed(seed)
    x = torch.rand(n, N_INPUTS, generator=rule) * 4.0 - 2.0
    a = torch.randn(N_INPUTS, 3, generator=rule)
    y = torch.sin(x @ a).sum(dim=1) + 0.5 * x[:, 0] * x[:, 1] - 0.3 * x[:, 2] ** 2
    y = y + 0.05 * torch.randn(n, generator=rule)
    return x, y.unsqueeze(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="weight updates to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    x, y = make_data(8192, args.seed)
    g = torch.Generator().manual_seed(args.seed)

    model = nn.Sequential(
        nn.Linear(N_INPUTS, 64),
        nn.Tanh(),
        nn.Linear(64, 64),
        nn.Tanh(),
        nn.Linear(64, 1),
    )
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    print(
        f"handwritten_sgd: {len(x)} samples, {sum(p.numel() for p in params)} parameters, "
        f"{args.steps} steps, no optimizer object",
        flush=True,
    )

    progress = Progress(args.steps)
    order = torch.randperm(len(x), generator=g)
    cursor, loss_value = 0, float("nan")
    for step in range(1, args.steps + 1):
        if cursor + args.batch_size > len(x):
            order, cursor = torch.randperm(len(x), generator=g), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size

        lr = args.lr * (1.0 - 0.9 * (step - 1) / max(1, args.steps))  # linear decay to 10%
        loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
        loss.backward()
        with torch.no_grad():
            for p, v in zip(params, velocity, strict=True):
                assert p.grad is not None
                v.mul_(args.momentum).add_(p.grad)
                p -= lr * v
                p.grad = None

        loss_value = loss.item()
        progress.update(step, loss_value, lr)
        if args.sleep > 0:
            time.sleep(args.sleep)

    progress.finish(args.steps, loss_value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
