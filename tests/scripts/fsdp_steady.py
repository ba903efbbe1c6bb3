"""A torchrun script with a sharded model, for tests: `fsdp_steady.py STEPS SLEEP [--fsdp1]`.

Reads LOCAL_RANK, joins a gloo process group and shards a tiny MLP over the ranks with FSDP2's
``fully_shard`` (each Linear, then the whole; ``--fsdp1``: ``FullyShardedDataParallel`` on the
CPU instead), trained with Adam and a StepLR schedule, so that the optimizer holds sharded
state and the schedule changes the lr during the test. Each rank adds noise of its own to the
batch, from torch's generator seeded by rank: the losses differ by rank, and an exact resume
needs each rank's shards, optimizer state, schedule and generator back. Prints ``rank R step K
loss L`` every 10 steps.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("steps", type=int)
parser.add_argument("sleep", type=float)
parser.add_argument("--fsdp1", action="store_true")
options = parser.parse_args()

local_rank = int(os.environ["LOCAL_RANK"])
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
model: torch.nn.Module
if options.fsdp1:
    from torch.distributed.fsdp import FullyShardedDataParallel

    warnings.simplefilter("ignore")  # FSDP1 warns of its deprecation on every call
    model = FullyShardedDataParallel(net, device_id=torch.device("cpu"), use_orig_params=True)
else:
    from torch.distributed.fsdp import fully_shard

    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)  # in place: net is an FSDPModule now
    model = net
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.9)
x = torch.randn(32, 8)
y = x.sum(1, keepdim=True)
torch.manual_seed(1000 + rank)
for step in range(1, options.steps + 1):
    batch = x + 0.1 * torch.randn_like(x)
    loss = torch.nn.functional.mse_loss(model(batch), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    if step % 10 == 0:
        print(f"rank {rank} step {step} loss {loss.item():.6f}", flush=True)
    if options.sleep:
        time.sleep(options.sleep)
dist.destroy_process_group()
print(f"rank {rank} done", flush=True)
