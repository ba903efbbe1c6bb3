"""Helpers shared by the tests (import them from here, never from conftest)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"
TUIDEBUG = [sys.executable, "-m", "tuidebug.cli"]


def start_detached(script: str | Path, *args: str, cwd: Path | None = None) -> str:
    """``tuidebug run --detach script args``; returns the run id."""
    proc = subprocess.run(
        [*TUIDEBUG, "run", "--detach", str(script), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd or ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    return first.split()[2]  # "tuidebug: run <id> started (...)"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def stop_run(run_id: str) -> None:
    """Ask a live run's supervisor to stop the run (what the console's quit-and-stop sends)."""
    from tuidebug.paths import find_run
    from tuidebug.wire.client import RunConnection
    from tuidebug.wire.messages import Command

    paths = find_run(run_id)
    assert paths is not None
    connection = await RunConnection.open(paths)
    connection.send(Command(name="stop-run", rank=-1))
    await asyncio.sleep(0.2)
    connection.close()


class Sink:
    """Stands in for a probe's link: keeps every message sent, in order."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def push_point(self, point: Any) -> None:
        pass

    def send(self, message: Any) -> None:
        self.messages.append(message)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [m for m in self.messages if isinstance(m, kind)]


def small_losses(steps: int, probe: Any = None, ask_at: int = 0, command: str = "") -> list[float]:
    """A small deterministic loop (dropout draws random numbers: a capture must not move them);
    with a probe, the console ``command`` (with ``steps: 3``) is sent during step ``ask_at``,
    twice (the second must be refused while the first runs)."""
    import torch

    from tuidebug.wire.messages import Command

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.Dropout(0.1), torch.nn.ReLU(), torch.nn.Linear(32, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(64, 16)
    y = x.sum(1, keepdim=True)
    losses = []
    for step in range(1, steps + 1):
        if probe is not None and step == ask_at:
            probe.handle_command(Command(name=command, args={"steps": "3"}))
            probe.handle_command(Command(name=command, args={"steps": "3"}))
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
