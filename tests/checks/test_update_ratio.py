"""update-ratio far above ~1e-3 is judged with the loss (checks/groups/gradients.py), in
process: the engine driven as the probe drives it, a window on steps 1-4 and one in 5."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from tuidebug.checks.config import ChecksConfig
from tuidebug.checks.engine import ChecksEngine
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.messages import Message, StepPoint


def alerts(model: nn.Module, step: Callable[[int], float], steps: int = 40) -> list[Alert]:
    sent: list[Message] = []
    engine = ChecksEngine(sent.append, 0, ChecksConfig(), every=5)
    try:
        for i in range(1, steps + 1):
            loss = step(i)
            engine.on_boundary(i, StepPoint(i, 0.0, loss), 0.0)
            if i == 1:
                engine.on_model("model", model)
    finally:
        engine.close()
    return [m for m in sent if isinstance(m, Alert) and m.rule == "update-ratio"]


def test_weights_travelling_to_a_far_solution_while_the_loss_falls_are_quiet() -> None:
    """tests/checks/corpus/regression.py's loop: a Linear from its initial scale to
    coefficients ~N(0, 25), updates 10-40% of the weights at steps 11 and 16."""
    torch.manual_seed(0)
    target, bias = torch.randn(4, 1) * 5, torch.randn(1) * 5
    fc = nn.Linear(4, 1)

    def step(_i: int) -> float:
        x = torch.randn(32).unsqueeze(1)
        features = torch.cat([x**i for i in range(1, 5)], 1)
        fc.zero_grad()
        loss = F.smooth_l1_loss(fc(features), features.mm(target) + bias.item())
        loss.backward()
        for param in fc.parameters():
            param.data.add_(-0.1 * param.grad)  # type: ignore[operator]
        return loss.item()

    assert alerts(fc, step) == []


def test_a_step_too_large_fires_with_the_losses_that_say_so() -> None:
    """demos/bugs/huge_updates.py's bug: Adam at lr 0.5, the loss above its start from step 2."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=g)).argmax(dim=1)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)

    def step(i: int) -> float:
        rows = slice((i * 64) % 1024, (i * 64) % 1024 + 64)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        return loss.item()

    found = alerts(model, step)
    assert [a.rule for a in found] == ["update-ratio"]
    assert "far above" in found[0].message
    assert "of the last 10 losses not below the first" in found[0].evidence
