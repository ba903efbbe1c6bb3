"""A training loop inside a function, for debugger tests: `debug_me.py STEPS SLEEP [RAISE_AT]`.

Prints the local ``marker`` at the end, so a test can check that an assignment made in ipdb
reached the running frame. Raises ValueError at step RAISE_AT when given.
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> None:
    steps = int(sys.argv[1])
    pause = float(sys.argv[2])
    raise_at = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batch = torch.randn(64, 8)
    target = batch.sum(1, keepdim=True)
    marker = "unchanged"
    for step in range(1, steps + 1):
        loss = torch.nn.functional.mse_loss(model(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == raise_at:
            raise ValueError(f"boom at step {step}")
        time.sleep(pause)
    print(f"marker: {marker}", flush=True)


if __name__ == "__main__":
    main()
