"""A deterministic CPU training loop that never heard of tuidebug (for checkpoint tests).

Dropout, Adam, a StepLR schedule, and a batch drawn from the torch and python generators at
each step, so a resume that missed any of those states gives different losses.

    python ckpt_steady.py STEPS [SLEEP_SECONDS]
"""

from __future__ import annotations

import random
import sys
import time

import torch

steps = int(sys.argv[1])
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(1)
model = torch.nn.Sequential(
    torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.ReLU(), torch.nn.Linear(32, 1)
)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.8)
for i in range(steps):
    x = torch.randn(16, 8) + random.random()
    y = x.sum(dim=1, keepdim=True)
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    print(f"iteration {i} loss {loss.item():.5f}", flush=True)
    if pause:
        time.sleep(pause)
