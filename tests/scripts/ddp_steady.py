"""A torchrun script for tests, unchanged from how people write one: `ddp_steady.py STEPS SLEEP
[CRASH_RANK CRASH_STEP] [--spike-rank R --spike-step K] [--noise]`.

Reads LOCAL_RANK, joins a gloo process group, wraps a tiny MLP in DistributedDataParallel and
trains on the same batch on every rank (so the loss is the same on every rank, step for step).
Prints ``rank R step K loss L`` every 10 steps. Rank CRASH_RANK raises at CRASH_STEP. The spike
adds 100 to the loss rank R reports at step K (not to what it trains on), for break conditions
that hold on one rank only. ``--noise``: each rank adds noise of its own to the batch, drawn
from torch's generator seeded by rank (so the losses differ by rank, and an exact resume needs
each rank's own generator state back).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

parser = argparse.ArgumentParser()
parser.add_argument("steps", type=int)
parser.add_argument("sleep", type=float)
parser.add_argument("crash_rank", type=int, nargs="?", default=-1)
parser.add_argument("crash_step", type=int, nargs="?", default=-1)
parser.add_argument("--spike-rank", type=int, default=-1)
parser.add_argument("--spike-step", type=int, default=-1)
parser.add_argument("--noise", action="store_true")
options = parser.parse_args()

local_rank = int(os.environ["LOCAL_RANK"])
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DistributedDataParallel(
    torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(32, 8)
y = x.sum(1, keepdim=True)
torch.manual_seed(1000 + rank)
for step in range(1, options.steps + 1):
    batch = x + 0.1 * torch.randn_like(x) if options.noise else x
    loss = torch.nn.functional.mse_loss(model(batch), y)
    optimizer.zero_grad()
    if rank == options.spike_rank and step == options.spike_step:
        (loss + 100.0).backward()  # the loss seen is 100 higher; the gradients are the same
    else:
        loss.backward()
    optimizer.step()
    if rank == options.crash_rank and step == options.crash_step:
        raise RuntimeError(f"rank {rank} gave up at step {step}")
    if step % 10 == 0:
        print(f"rank {rank} step {step} loss {loss.item():.6f}", flush=True)
    if options.sleep:
        time.sleep(options.sleep)
dist.destroy_process_group()
print(f"rank {rank} done", flush=True)
