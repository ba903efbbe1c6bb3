"""The probe inside a real training loop, reporting into an in-memory sink.

The sink stands in for the socket link only (the wire and supervisor have their own tests);
the training, torch's hooks and the probe are all real.
"""

from __future__ import annotations

import warnings

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks

from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import Boundary, Message, ModelSeen, OptimizerSeen, StepPoint


class MemoryLink:
    """Collects what the probe would send to the supervisor."""

    def __init__(self) -> None:
        self.points: list[StepPoint] = []
        self.messages: list[Message] = []

    def push_point(self, point: StepPoint) -> None:
        self.points.append(point)

    def send(self, message: Message) -> None:
        self.messages.append(message)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [m for m in self.messages if isinstance(m, kind)]


def make_probe() -> tuple[Probe, MemoryLink]:
    link = MemoryLink()
    probe = Probe(link)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    return probe, link


def model_and_data() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(32, 4)
    return model, x, x.sum(1, keepdim=True)


def train_steps(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    n: int,
) -> list[float]:
    """A plain loop that never heard of tuidebug; the losses it saw."""
    losses = []
    for _ in range(n):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_zero_code_change_optimizer_loop() -> None:
    model, x, y = model_and_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    probe, link = make_probe()
    try:
        # The probe adds nothing to the run's output: no warning either (float() of a loss
        # that requires grad warns; the probe reads it another way).
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            losses = train_steps(model, x, y, optimizer, 20)
        probe.finish()
    finally:
        probe.remove_hooks()
    assert [p.step for p in link.points] == list(range(1, 21))
    assert [p.loss for p in link.points] == losses
    assert link.of(Boundary)[0].source == "optimizer"
    (seen,) = link.of(ModelSeen)
    assert seen.class_name == "Sequential" and seen.parameters == 4 * 8 + 8 + 8 + 1
    assert link.of(OptimizerSeen)[0].class_name == "SGD"


def test_hand_written_sgd_steps_on_backward() -> None:
    model, x, y = model_and_data()
    probe, link = make_probe()
    losses = []
    try:
        for _ in range(10):
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.05 * p.grad
                    p.grad = None
            losses.append(loss.item())
        probe.finish()  # the last step is only known to be one when the script ends
    finally:
        probe.remove_hooks()
    assert [p.step for p in link.points] == list(range(1, 11))
    assert [p.loss for p in link.points] == losses
    assert link.of(Boundary)[0].source == "backward"


def accumulate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    steps: int,
    micro_batches: int = 4,
) -> list[float]:
    """``steps`` optimizer steps of ``micro_batches`` backwards each; each step's mean loss."""
    means = []
    for _ in range(steps):
        micro = []
        for chunk in range(micro_batches):
            part = slice(chunk, None, micro_batches)
            loss = torch.nn.functional.mse_loss(model(x[part]), y[part])
            loss.backward()
            micro.append(loss.item())
        optimizer.step()
        optimizer.zero_grad()
        means.append(sum(micro) / micro_batches)
    return means


def test_gradient_accumulation_reports_the_mean_micro_batch_loss() -> None:
    model, x, y = model_and_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe, link = make_probe()
    try:
        # Steady state: the optimizer was seen before accumulation starts.
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        expected = accumulate(model, x, y, optimizer, 3)
    finally:
        probe.remove_hooks()
    assert [p.step for p in link.points] == [1, 2, 3, 4]
    for point, want in zip(link.points[1:], expected, strict=False):
        assert abs((point.loss or 0) - want) < 1e-6


def test_accumulation_from_the_first_step_is_one_step_per_optimizer_step() -> None:
    """No optimizer step seen yet, and micro-batches backpropagate one after another: an
    optimizer exists, so its step() ends the step (not each backward, as in a loop with no
    optimizer). The steps are numbered as the script's own optimizer steps from the first."""
    model, x, y = model_and_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe, link = make_probe()
    try:
        expected = accumulate(model, x, y, optimizer, 3)
        probe.finish()
    finally:
        probe.remove_hooks()
    assert [p.step for p in link.points] == [1, 2, 3]
    assert [b.source for b in link.of(Boundary)] == ["optimizer"]
    for point, want in zip(link.points, expected, strict=True):
        assert abs((point.loss or 0) - want) < 1e-6


def test_lbfgs_closure_backwards_are_inside_one_step() -> None:
    """LBFGS calls the closure (forward + backward) several times inside one step()."""
    model, x, y = model_and_data()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    probe, link = make_probe()
    calls = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        calls.append(loss.item())
        return loss

    try:
        for _ in range(3):
            optimizer.step(closure)
        probe.finish()
    finally:
        probe.remove_hooks()
    assert len(calls) > 3  # several closure calls a step
    assert [p.step for p in link.points] == [1, 2, 3]
    assert [b.source for b in link.of(Boundary)] == ["optimizer"]


def test_hook_object_is_the_boundary_and_logs_named_scalars() -> None:
    model, x, y = model_and_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    probe, link = make_probe()
    try:
        dbg = probe.attach(model, optimizer)
        for _ in range(5):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            dbg.step(loss=loss, lr=0.01, gn=torch.tensor(2.5), bad="x")
    finally:
        probe.remove_hooks()
    assert [p.step for p in link.points] == [1, 2, 3, 4, 5]  # optimizer steps do not count twice
    assert link.points[-1].scalars == {"lr": 0.01, "gn": 2.5}
    assert link.of(Boundary)[-1].source == "hook"


def test_remove_hooks_leaves_torch_as_it_was() -> None:
    original_backward = torch.autograd.backward
    hooks_before = len(_global_optimizer_post_hooks)
    probe, _ = make_probe()
    assert torch.autograd.backward is not original_backward
    assert len(_global_optimizer_post_hooks) == hooks_before + 1
    probe.remove_hooks()
    probe.remove_hooks()  # idempotent
    assert torch.autograd.backward is original_backward
    assert len(_global_optimizer_post_hooks) == hooks_before
    from torch.nn.modules import module as module_mod

    assert not module_mod._global_forward_pre_hooks


def test_a_failing_probe_disables_itself_and_training_goes_on() -> None:
    class BrokenLink(MemoryLink):
        def push_point(self, point: StepPoint) -> None:
            raise RuntimeError("sink exploded")

    model, x, y = model_and_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = Probe(BrokenLink())  # type: ignore[arg-type]
    probe.install_auto_hooks()
    original_backward = probe._auto._original_backward
    try:
        for _ in range(3):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        probe.remove_hooks()
    assert probe.disabled and "sink exploded" in probe.disabled_reason
    assert torch.autograd.backward is original_backward  # disabling removed the hooks at once


def test_the_probe_does_not_change_what_training_computes() -> None:
    def train(with_probe: bool) -> list[float]:
        model, x, y = model_and_data()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        probe = make_probe()[0] if with_probe else None
        try:
            return train_steps(model, x, y, optimizer, 15)
        finally:
            if probe:
                probe.remove_hooks()

    assert train(True) == train(False)


def test_the_layer_budget_covers_the_probes_own_step_work() -> None:
    """The probe times its own work on each step (backward and boundary) and the layers
    observer hands it to the sampler, whose budget is the whole probe's: the cadence makes room
    for it (tuidebug/probe/schedule.py)."""
    from tuidebug.probe.extensions import layers

    probe, _link = make_probe()
    layers.install(probe, {})
    observer = probe.observers[-1]
    assert isinstance(observer, layers.LayersObserver)
    sampler = observer.sampler
    handed: list[float] = []
    on_boundary = sampler.on_boundary

    def spy(
        step: int, now: float, loss: float | None, overhead: float = 0.0, skipped: bool = False
    ) -> bool:
        assert overhead == probe.boundary_time
        handed.append(overhead)
        return on_boundary(step, now, loss, overhead, skipped)

    sampler.on_boundary = spy  # type: ignore[method-assign]
    model, x, y = model_and_data()
    try:
        train_steps(model, x, y, torch.optim.SGD(model.parameters(), lr=0.01), 40)
    finally:
        probe.remove_hooks()
        sampler.close()
    assert len(handed) == 40
    assert all(0 < t < 0.05 for t in handed)  # measured, and a step's work, not a whole step
    # Unsampled steps fold it into the per-step cost the interval is computed from: at least
    # the smallest of the probe's own times (the sampler's own work only adds to it).
    assert sampler.schedule.per_step > min(handed)
