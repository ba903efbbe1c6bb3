"""A compiled model trained in mixed precision: torch.compile, autocast and a GradScaler.

What it shows under ``tuidebug run``, with no change to the script:
- ``torch.compile(model)`` (``--compile-method`` for ``model.compile()``) trains without a
  graph break or a recompile caused by the probe. Layer statistics of a compiled model are off
  by default (the console says so, once); ``tuidebug run --stats-every 20`` takes them on every
  20th step, run eagerly (docs/layers.md, "torch.compile");
- ``torch.autocast`` (bf16 on the CPU; on CUDA it would be fp16) with ``torch.amp.GradScaler``:
  the loss shown is the unscaled one, ``amp_scale`` is a chart, and the step that
  ``--overflow-at`` poisons (one gradient times inf, what an fp16 overflow does) is skipped by
  the scaler, flagged ``amp_skipped`` = 1 and halves the scale, with no NaN alert. Save now
  (``c`` in the console) saves the scaler's state with the model and the optimizer.

The task: regression of a fixed random smooth function of 16 inputs by a small MLP, AdamW.
The backend is ``aot_eager`` by default (dynamo's tracing and autograd's graph without code
generation: it starts in about a second); ``--backend inductor`` compiles for real (several
seconds on a laptop CPU).

    python demos/amp_compile.py --steps 300
    tuidebug run demos/amp_compile.py --steps 300 --sleep 0.02
"""

from __future__ import annotations

import argparse
import time

import torch
from _progress import Progress
from torch import nn


class Regressor(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(16, width)
        self.blocks = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, width)
        )
        self.act = nn.GELU()
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x))
        return self.out(h + self.blocks(h))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep each step")
    parser.add_argument("--backend", default="aot_eager", help="torch.compile backend")
    parser.add_argument(
        "--compile-method", action="store_true", help="model.compile() instead of torch.compile"
    )
    parser.add_argument(
        "--overflow-at", type=int, default=40, help="step whose gradient overflows (0: none)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    target = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)).requires_grad_(False)
    model = Regressor()
    if args.compile_method:
        model.compile(backend=args.backend)
        compiled: nn.Module = model
    else:
        compiled = torch.compile(model, backend=args.backend)  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    device = "cpu"
    dtype = torch.bfloat16  # CPU autocast; on CUDA: torch.float16
    scaler = torch.amp.GradScaler(device)
    step = 0
    overflow = [False]
    model.inp.weight.register_hook(lambda g: g * float("inf") if overflow[0] else g)
    progress = Progress(args.steps)
    loss_value = float("nan")
    while step < args.steps:
        x = torch.randn(128, 16)
        y = target(x)
        overflow[0] = step + 1 == args.overflow_at
        with torch.autocast(device, dtype=dtype):
            loss = nn.functional.mse_loss(compiled(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        loss_value = loss.item()
        extra = f"  scale {scaler.get_scale():.0f}" if step % 50 == 0 or step == 1 else ""
        progress.update(step, loss_value, optimizer.param_groups[0]["lr"], extra)
        if args.sleep:
            time.sleep(args.sleep)
    progress.finish(step, loss_value, f", scale {scaler.get_scale():.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
