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
import os
import sys
import time

import torch
from torch import nn

N_INPUTS = 8


class Progress:
    """Console output in the style of tqdm.

    A bar rewritten in place with ``\\r`` every ``bar_every`` steps, a full line every
    ``log_every`` steps (and at the first and last), and a coloured summary at the end.
    """

    def __init__(self, total: int, log_every: int = 50, bar_every: int = 5) -> None:
        self.total = total
        self.log_every = log_every
        self.bar_every = bar_every
        self.start = time.perf_counter()
        self.last_time = self.start
        self.last_step = 0
        self.first_loss: float | None = None
        self.colour = "NO_COLOR" not in os.environ

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def line(self, text: str) -> None:
        """Print a full line, first erasing the bar that may be on the current line."""
        self._write(f"\r\x1b[K{text}\n")

    def update(self, step: int, loss: float, lr: float, extra: str = "") -> None:
        if self.first_loss is None:
            self.first_loss = loss
        if step == 1 or step % self.log_every == 0 or step == self.total:
            now = time.perf_counter()
            rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_step = now, step
            self.line(
                f"step {step:>6}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  "
                f"{rate:8.1f} steps/s{extra}"
            )
        elif step % self.bar_every == 0:
            width = 30
            filled = int(width * step / self.total)
            bar = "#" * filled + "-" * (width - filled)
            self._write(f"\r[{bar}] {step}/{self.total}  loss {loss:.4f}")

    def finish(self, steps: int, final_loss: float, extra: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        first = self.first_loss if self.first_loss is not None else final_loss
        green, bold, reset = ("\x1b[32m", "\x1b[1m", "\x1b[0m") if self.colour else ("", "", "")
        self.line(
            f"{bold}{green}finished{reset} {steps} steps in {elapsed:.1f}s "
            f"({steps / max(elapsed, 1e-9):.1f} steps/s), "
            f"loss {first:.4f} -> {bold}{final_loss:.4f}{reset}{extra}"
        )
        self.line(f"done: {steps} steps, final loss {final_loss:.4f}")


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
