"""Shared by the bug gallery: synthetic data and the argument parser (not a bug script itself)."""

from __future__ import annotations

import argparse

import torch

FEATURES, CLASSES = 16, 4


def args(default_steps: int = 60) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=default_steps)
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args()
    torch.manual_seed(parsed.seed)
    return parsed


def classification(n: int = 2048, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and class labels 0..CLASSES-1 from a fixed random linear rule."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    w = torch.randn(FEATURES, CLASSES, generator=g)
    return x, (x @ w).argmax(dim=1)


def regression(n: int = 2048, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and a (n, 1) target from a smooth function."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    return x, torch.sin(x[:, :4].sum(dim=1, keepdim=True))


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 64, seed: int = 0):  # type: ignore[no-untyped-def]
    """Endless shuffled minibatches."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - size + 1, size):
            idx = order[i : i + size]
            yield x[idx], y[idx]
