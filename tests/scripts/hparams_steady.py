"""A steady loop with a scheduler and a tunable, for the live-hyperparameter tests:
`hparams_steady.py STEPS SLEEP [RECORD]`.

Each iteration reads the lr its ``optimizer.step()`` will use, the scheduler's base lr and
``dbg.tunable("dropout", 0.1)`` (applied to the model's dropout), and prints them as
``hp I LR BASE DROPOUT`` (``repr`` floats, exact) and appends the same line to RECORD: what the
script itself saw, step by step, for a test to compare with what the console asked for.
"""

from __future__ import annotations

import sys
import time

import torch

import tuidebug

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
record = open(sys.argv[3], "a") if len(sys.argv) > 3 else None  # noqa: SIM115 - for the run

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)
dbg = tuidebug.attach(model, optimizer, scheduler)
x = torch.randn(64, 8)
y = x.sum(1, keepdim=True)
for i in range(1, steps + 1):
    dropout = dbg.tunable("dropout", 0.1)
    model[2].p = dropout
    lr = optimizer.param_groups[0]["lr"]
    line = f"hp {i} {lr!r} {scheduler.base_lrs[0]!r} {dropout!r}"
    print(line, flush=True)
    if record is not None:
        record.write(line + "\n")
        record.flush()
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    dbg.step(loss=loss)
    if pause:
        time.sleep(pause)
print("done", flush=True)
