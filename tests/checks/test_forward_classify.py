"""Every root-model forward classified (checks/engine.py, issue 19 item 1), in process.

The engine is driven the way the probe drives it (``on_model``, then ``on_boundary`` after each
optimizer step) with windows that never open after the first steps, so what is found comes
from the every-forward root hooks, not from a sampled window.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn
from torch.nn import functional as F

from tuidebug.checks.config import ChecksConfig
from tuidebug.checks.engine import ChecksEngine
from tuidebug.checks.groups.modes import ModeRules
from tuidebug.wire.check_messages import Alert
from tuidebug.wire.messages import Message, StepPoint

MODE_RULES = set(ModeRules.rules)


def train(engine: ChecksEngine, model: nn.Module, steps: int, evaluate: object) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        engine.on_boundary(step, StepPoint(step, 0.0, loss.item()), 0.0)
        if step == 1:
            engine.on_model("model", model)  # the probe finds the roots once step 1 ends
        if step % 13 == 0:  # never a sampled step's window with every=1000
            evaluate(model, x, y)  # type: ignore[operator]


def run(evaluate: object, model: nn.Module | None = None) -> tuple[list[Alert], ChecksEngine]:
    sent: list[Message] = []
    engine = ChecksEngine(sent.append, 0, ChecksConfig(), every=1000)
    model = model or nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.Linear(16, 3))
    try:
        train(engine, model, 30, evaluate)
    finally:
        engine.close()
    # Only the mode rules: the same batch every step trips same-batch too, on purpose here.
    return [m for m in sent if isinstance(m, Alert) and m.rule in MODE_RULES], engine


def test_epoch_end_eval_with_a_graph_is_seen_off_the_sampled_steps() -> None:
    def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        model.eval()
        F.cross_entropy(model(x), y).item()  # no torch.no_grad()
        model.train()

    alerts, engine = run(evaluate)
    assert [(a.rule, a.place) for a in alerts] == [("eval-builds-graph", "model")]
    assert "step 14" in alerts[0].message
    modes = next(g for g in engine._groups if hasattr(g, "counts"))
    assert modes.counts[("model", "eval-graph")] == 2  # steps 13 and 26
    assert modes.counts[("model", "train")] == 29  # step 1 ran before the model was known


def test_inference_mode_in_train_mode_and_a_clean_eval() -> None:
    def in_train_mode(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.inference_mode():
            model(x)

    alerts, _ = run(in_train_mode)
    assert [a.rule for a in alerts] == ["train-mode-eval"]
    assert "inference_mode" in alerts[0].evidence

    def clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        model.eval()
        with torch.no_grad():
            model(x)
        model.train()

    alerts, _ = run(clean)
    assert alerts == []


def test_dataparallel_mode_is_the_wrapped_modules() -> None:
    inner = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
    wrapped = nn.DataParallel(inner)
    inner.eval()  # the wrapper's own flag stays True

    alerts, _ = run(lambda *_: None, wrapped)
    assert [a.rule for a in alerts] == ["eval-mode-training"]


def test_hooks_and_rebound_names_are_removed() -> None:
    sent: list[Message] = []
    engine = ChecksEngine(sent.append, 0, ChecksConfig(), every=1000)
    model = nn.Linear(4, 2)
    engine.on_model("model", model)
    assert model._forward_pre_hooks and model._forward_hooks
    # A user module that bound the function before the window opened: rebound at the next one.
    user = types.ModuleType("user_train_module")
    user.__file__ = "/tmp/user_train_module.py"
    # (the first window is open since the engine's creation: F's own name is wrapped now)
    user.cross_entropy = F.cross_entropy.__wrapped__  # type: ignore[attr-defined]
    sys.modules["user_train_module"] = user
    try:
        engine.on_boundary(1, StepPoint(1, 0.0, 1.0), 0.0)  # window for step 2 opens
        assert user.cross_entropy is F.cross_entropy  # type: ignore[attr-defined]
        assert user.cross_entropy.__wrapped__ is not None  # type: ignore[attr-defined]
        original = F.cross_entropy.__wrapped__  # type: ignore[attr-defined]
        engine.close()
        assert user.cross_entropy is original  # type: ignore[attr-defined]
        assert F.cross_entropy is original
    finally:
        sys.modules.pop("user_train_module", None)
    assert not model._forward_pre_hooks and not model._forward_hooks
