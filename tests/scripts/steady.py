"""A small, steady training loop for tests: `steady.py STEPS SLEEP [DONE_FILE]`.

Trains a tiny MLP with SGD, printing a line every 10 steps; sleeps SLEEP seconds a step so a
test can watch it; writes DONE_FILE (if given) with the final step count when it finishes.
"""

from __future__ import annotations

import sys
import time

import torch

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
done_file = sys.argv[3] if len(sys.argv) > 3 else None

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 8)
y = x.sum(1, keepdim=True)
for step in range(1, steps + 1):
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 10 == 0:
        print(f"step {step} loss {loss.item():.5f}", flush=True)
    if pause:
        time.sleep(pause)
if done_file:
    with open(done_file, "w") as handle:
        handle.write(str(steps))
print("done", flush=True)
