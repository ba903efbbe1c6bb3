"""A small deterministic training run used by the exact-resume tests (run as a subprocess).

It draws from every generator a real run uses - torch (init, dropout), python ``random`` and
numpy (noise in the inputs) and a shuffling loader - so that any state the checkpoint failed to
carry shows up as a different loss. Prints one JSON line per step: {"step": s, "loss": hex}.

    python ckpt_train_script.py --steps 26 [--save-at 13 20 --out DIR] [--resume FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np
import torch
from torch import nn

from tuidebug.ckpt import ResumableLoader, resume, save_now


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--save-at", type=int, nargs="*", default=[])
    ap.add_argument("--out", default=".")
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)

    data_gen = torch.Generator().manual_seed(1234)
    xs = torch.randn(40, 8, generator=data_gen)
    ys = torch.randn(40, 1, generator=data_gen)
    dataset = torch.utils.data.TensorDataset(xs, ys)
    loader = ResumableLoader(dataset, batch_size=4, seed=7, shuffle=True)  # 10 batches/epoch

    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.9)

    step, start_epoch = 0, 0
    if args.resume:
        state = resume(
            args.resume,
            models={"model": model},
            optimizers={"opt": opt},
            schedulers={"sched": sched},
            loaders={"train": loader},
        )
        step, start_epoch = int(state["step"]), int(state["epoch"])

    for epoch in range(start_epoch, 1000):
        for x, y in loader:
            if step >= args.steps:
                return 0
            scale = 1.0 + 0.01 * random.random()
            noise = torch.from_numpy(np.random.randn(*y.shape).astype(np.float32)) * 0.01
            loss = nn.functional.mse_loss(model(x * scale), y + noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            print(json.dumps({"step": step, "loss": float(loss.detach()).hex()}), flush=True)
            if step in args.save_at:
                result = save_now(
                    args.out,
                    models={"model": model},
                    optimizers={"opt": opt},
                    schedulers={"sched": sched},
                    step=step,
                    epoch=epoch,
                    metadata={"loss": loss},
                    loaders={"train": loader},
                )
                result.raise_for_error()
    return 0


if __name__ == "__main__":
    sys.exit(main())
