"""Trains STEPS steps, then gets stuck: `stuck.py MODE STEPS [SLEEP]` (tests of stacks and hangs).

MODE: "sleep" (time.sleep: C code that releases the GIL), "pause" (signal.pause()), "gil" (a
C loop that holds the GIL: the probe's I/O thread cannot answer), "pdb" (a bare
pdb.set_trace(), which the probe does not announce), "stall" (stuck for 5 s, then 20 more steps
and the end), "steady" (never stuck: trains on, SLEEP seconds a step). The stuck place is the
function ``wait_here_forever``.
"""

from __future__ import annotations

import signal
import sys
import time

import torch

mode = sys.argv[1]
steps = int(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.02


def wait_here_forever() -> None:
    time.sleep(0.5)  # the probe's last batch of steps goes out before the GIL may be taken
    print(f"stuck ({mode})", flush=True)  # said as it gets stuck: a test may ask from here
    if mode == "sleep":
        time.sleep(3600)
    elif mode == "pause":
        signal.pause()
    elif mode == "gil":
        sum(range(10**15))  # one C call, never giving the GIL back
    elif mode == "pdb":
        import pdb

        pdb.set_trace()  # waits for a command on the terminal
    elif mode == "stall":
        time.sleep(5)


def train() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 4)
    step = 0
    end = steps + 20 if mode == "stall" else steps
    while mode == "steady" or step < end:
        step += 1
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(pause)
        if step == steps and mode != "steady":
            wait_here_forever()
    print("done", flush=True)


train()
