"""The classifier again, this time holding tuidebug's hook object explicitly.

What it shows: the opt-in API. The script names its model and optimizer once and marks each step
itself, logging extra scalars under their own names::

    import tuidebug
    dbg = tuidebug.attach(model, optimizer)
    ...
    dbg.step(loss=loss, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm, train_acc=acc)

Under ``tuidebug run`` the hook is live: ``dbg.step()`` is the step boundary and ``grad_norm``
and ``train_acc`` appear as charts next to the loss. Anywhere else ``tuidebug.attach`` returns
an inert hook whose calls cost almost nothing, so the lines can stay in a script for good. The
rest is the classifier demo in brief: synthetic data in a shuffling ``DataLoader``, Linear /
BatchNorm1d / ReLU / Dropout / LayerNorm layers, AdamW with a ``StepLR`` schedule, gradient
clipping.

Run it (from a checkout without tuidebug installed, the script finds the package next door)::

    python demos/with_hook.py --steps 500
    tuidebug run demos/with_hook.py --steps 500 --sleep 0.02
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from _progress import Progress
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

N_FEATURES = 32
N_CLASSES = 10


def import_tuidebug() -> ModuleType:
    """``import tuidebug``, falling back to the checkout this demo lives in."""
    try:
        return importlib.import_module("tuidebug")
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        return importlib.import_module("tuidebug")


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples labelled by a fixed random nonlinear rule (fixed by ``seed``) plus noise."""
    rule = torch.Generator().manual_seed(seed)
    w1 = torch.randn(N_FEATURES, 32, generator=rule) / math.sqrt(N_FEATURES)
    w2 = torch.randn(32, N_CLASSES, generator=rule) / math.sqrt(32)
    x = torch.randn(n, N_FEATURES, generator=rule)
    logits = (torch.tanh(x @ w1 * 1.5) @ w2 + 0.5 * x[:, :N_CLASSES]) * 3.0
    logits = logits + 0.3 * torch.randn(n, N_CLASSES, generator=rule)
    return x, logits.argmax(dim=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuidebug = import_tuidebug()
    torch.manual_seed(args.seed)
    x, y = make_data(8000, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, generator=g, drop_last=True
    )

    model = nn.Sequential(
        nn.Linear(N_FEATURES, 128, bias=False),  # BatchNorm's shift replaces the bias
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(128, 64),
        nn.LayerNorm(64),
        nn.ReLU(),
        nn.Linear(64, N_CLASSES),
    )
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, args.steps // 3), gamma=0.3
    )
    dbg = tuidebug.attach(model, optimizer)
    print(
        f"with_hook: {len(x)} samples, {sum(p.numel() for p in model.parameters())} "
        f"parameters, {args.steps} steps, hook {'live' if dbg.active else 'inert'}",
        flush=True,
    )

    progress = Progress(args.steps)
    model.train()
    step, loss_value = 0, float("nan")
    while step < args.steps:
        for xb, yb in loader:
            lr = scheduler.get_last_lr()[0]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
            optimizer.step()
            scheduler.step()
            step += 1
            acc = (logits.argmax(dim=1) == yb).float().mean()
            dbg.step(loss=loss, lr=lr, grad_norm=grad_norm, train_acc=acc)
            loss_value = loss.item()
            progress.update(step, loss_value, lr, extra=f"  grad norm {float(grad_norm):.3f}")
            if args.sleep > 0:
                time.sleep(args.sleep)
            if step >= args.steps:
                break

    dbg.detach()
    progress.finish(step, loss_value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
