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


def _gan(engine: ChecksEngine, sample: object, no_grad_fakes: bool, steps: int = 12) -> None:
    """A small GAN trained the way pytorch/examples' dcgan is (two optimizers, the generator's
    output detached into the discriminator, then backpropagated through it), or with the
    discriminator's fakes made under no_grad and a fresh generator forward for its own step
    (``no_grad_fakes``, as WGAN scripts do); ``sample`` runs after each generator step."""
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8))
    disc = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    real, ones, zeros = torch.randn(16, 8), torch.ones(16, 1), torch.zeros(16, 1)
    step = 0

    def boundary() -> None:
        nonlocal step
        step += 1
        engine.on_boundary(step, StepPoint(step, 0.0, 0.0), 0.0)
        if step == 1:
            engine.on_model("gen", gen)
            engine.on_model("disc", disc)

    for i in range(steps):
        disc.zero_grad()
        if no_grad_fakes:
            with torch.no_grad():  # in train mode, not backpropagated: still training data
                fake = gen(torch.randn(16, 4))
        else:
            fake = gen(torch.randn(16, 4))
        d_loss = F.binary_cross_entropy_with_logits(disc(real), ones)
        d_loss = d_loss + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
        d_loss.backward()
        opt_d.step()
        boundary()
        gen.zero_grad()
        if no_grad_fakes:
            fake = gen(torch.randn(16, 4))
        F.binary_cross_entropy_with_logits(disc(fake), ones).backward()
        opt_g.step()
        boundary()
        sample(i, gen, disc)  # type: ignore[operator]


def _gan_alerts(sample: object, no_grad_fakes: bool = False) -> list[tuple[str, str]]:
    sent: list[Message] = []
    engine = ChecksEngine(sent.append, 0, ChecksConfig(), every=1000)
    try:
        _gan(engine, sample, no_grad_fakes)
    finally:
        engine.close()
    return [(m.rule, m.place) for m in sent if isinstance(m, Alert) and m.rule in MODE_RULES]


def test_a_generators_sampling_pass_in_train_mode_is_no_evaluation() -> None:
    noise = torch.randn(16, 4)

    def sample(i: int, gen: nn.Module, _disc: nn.Module) -> None:
        if i % 5 == 0:  # at i == 0 too: before any of gen's forwards was recorded as trained
            with torch.no_grad():
                gen(noise)  # samples to look at: BatchNorm on batch statistics, as in training

    assert _gan_alerts(sample) == []
    assert _gan_alerts(sample, no_grad_fakes=True) == []

    def score(i: int, gen: nn.Module, disc: nn.Module) -> None:
        if i % 5 == 0:
            with torch.no_grad():
                disc(gen(noise))  # the generator's output scored by a model: an evaluation

    assert _gan_alerts(score) == [("train-mode-eval", "gen")]


def test_an_upstream_model_evaluated_into_its_head_is_judged() -> None:
    sent: list[Message] = []
    engine = ChecksEngine(sent.append, 0, ChecksConfig(), every=1000)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.ReLU())
    head = nn.Linear(16, 3)
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.01)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    try:
        for step in range(1, 31):
            optimizer.zero_grad()
            F.cross_entropy(head(encoder(x)), y).backward()
            optimizer.step()
            engine.on_boundary(step, StepPoint(step, 0.0, 0.0), 0.0)
            if step == 1:
                engine.on_model("encoder", encoder)
                engine.on_model("head", head)
            if step % 13 == 0:
                with torch.no_grad():  # no encoder.eval(): its Dropout stays on
                    F.cross_entropy(head(encoder(x)), y).item()
    finally:
        engine.close()
    alerts = [(m.rule, m.place) for m in sent if isinstance(m, Alert) and m.rule in MODE_RULES]
    assert alerts == [("train-mode-eval", "encoder")]
