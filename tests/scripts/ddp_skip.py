"""The classic hang of a job, for tests: `ddp_skip.py STEPS SKIP_RANK SKIP_STEP` under torchrun.

Every step each rank all-reduces its loss for logging before its update, except that rank
SKIP_RANK skips that all_reduce at step SKIP_STEP (a rank-dependent branch around a collective).
The all-reduces pair up one off from then on, so the job hangs at its end: every other rank
waits in its last all_reduce, which the skipping rank never makes; that one, done with its
loop, waits for a message from rank 0 (a point-to-point recv, which cannot pair with the
others' all_reduce). gloo's timeout (60 s) ends a job a test left behind.
"""

from __future__ import annotations

import datetime
import sys
import time

import torch
import torch.distributed as dist

steps, skip_rank, skip_step = (int(a) for a in sys.argv[1:4])

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 4)
for step in range(1, steps + 1):
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    logged = loss.detach().clone()
    if not (rank == skip_rank and step == skip_step):
        dist.all_reduce(logged)
    optimizer.step()  # the step's boundary: a rank stuck in the all_reduce has not reached it
    time.sleep(0.02)
print(f"rank {rank} finished its loop", flush=True)
if rank == skip_rank:
    dist.recv(torch.zeros(1), src=0, tag=99)
dist.destroy_process_group()
