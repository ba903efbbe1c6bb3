"""Mixed precision under the real probe: bf16 autocast on the CPU with a real GradScaler.

``torch.amp.GradScaler("cpu")`` works in torch 2.13 (fp16 autocast is for CUDA; on the CPU the
autocast dtype is bf16, which needs no scaler, but a scaler is what code written for CUDA
carries over, and it behaves the same: it skips a step whose gradients are not finite and
halves its scale). A step is forced to be skipped by a gradient hook that multiplies one
gradient by inf on that step. The probe, the layers extension and the checkpoint extension
are the real ones, reporting into an in-memory sink.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from test_probe import MemoryLink

from tuidebug.probe.extensions import checkpoints, layers
from tuidebug.probe.probe import Probe
from tuidebug.wire.checkpoint_messages import CheckpointRestored, CheckpointSaved
from tuidebug.wire.layer_messages import NonFinite
from tuidebug.wire.messages import Command

OnStep = Callable[[int, Probe, torch.amp.GradScaler], None]


def make(tmp_path: Path, **options: Any) -> tuple[Probe, MemoryLink]:
    link = MemoryLink()
    probe = Probe(link)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    opts = {"run_folder": str(tmp_path), "pause_on_nonfinite": False, **options}
    layers.install(probe, opts)
    checkpoints.install(probe, opts)
    return probe, link


def train(
    probe: Probe,
    steps: int,
    *,
    poison_step: int | None = None,
    nan_from: int | None = None,
    on_step: OnStep | None = None,
) -> tuple[list[float], list[float], torch.amp.GradScaler]:
    """A bf16 autocast loop with a GradScaler; the losses and scales the script saw.

    ``poison_step``: that step's first-layer weight gradient is multiplied by inf (the scaler
    skips it). ``nan_from``: from that step on the batch has a NaN (a real NaN bug).
    """
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    current = [0]
    first = model[0]
    assert isinstance(first, torch.nn.Linear)
    first.weight.register_hook(lambda g: g * float("inf") if current[0] == poison_step else g)
    losses: list[float] = []
    scales: list[float] = []
    try:
        for i in range(steps):
            current[0] = i
            batch = x.clone()
            if nan_from is not None and i >= nan_from:
                batch[0, 0] = float("nan")
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(model(batch).float(), y)
            opt.zero_grad()
            scales.append(scaler.get_scale())
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
            if on_step is not None:
                on_step(i, probe, scaler)
    finally:
        probe.finish()
        probe.remove_hooks()
    return losses, scales, scaler


def test_amp_steps_report_the_unscaled_loss_and_the_scale(tmp_path: Path) -> None:
    probe, link = make(tmp_path, stats_every=1)
    losses, scales, _ = train(probe, 8)
    assert [p.step for p in link.points] == list(range(1, 9))
    # The loss the script computed, not loss * 65536 (what it backpropagates).
    assert [p.loss for p in link.points] == losses
    assert [p.scalars["amp_scale"] for p in link.points] == scales == [65536.0] * 8
    assert [p.scalars["amp_skipped"] for p in link.points] == [0.0] * 8
    assert probe.scalers() and link.of(NonFinite) == []


def test_a_skipped_step_is_shown_as_such_and_is_no_nan_alert(tmp_path: Path) -> None:
    # Every step sampled: the skipped step's sample sees the inf gradients too.
    probe, link = make(tmp_path, stats_every=1)
    losses, scales, _ = train(probe, 10, poison_step=4)
    points = {p.step: p for p in link.points}
    assert sorted(points) == list(range(1, 11))  # the skipped step is still a step
    assert [points[s].scalars["amp_skipped"] for s in range(1, 11)] == [
        1.0 if s == 5 else 0.0 for s in range(1, 11)
    ]
    assert points[5].scalars["amp_scale"] == 65536.0
    assert points[6].scalars["amp_scale"] == 32768.0 == scales[5]  # the scaler halved it
    assert losses[5] == losses[4]  # no update on the skipped step
    assert link.of(NonFinite) == []


def test_a_skipped_step_without_samples_does_not_trip_the_tripwire(tmp_path: Path) -> None:
    probe, link = make(tmp_path, stats_every=1000)
    train(probe, 10, poison_step=6)
    assert [p.scalars["amp_skipped"] for p in link.points].count(1.0) == 1
    assert link.of(NonFinite) == []


def test_a_real_nan_in_an_amp_run_is_still_caught(tmp_path: Path) -> None:
    probe, link = make(tmp_path)
    train(probe, 10, nan_from=5)
    reports = link.of(NonFinite)
    assert reports and reports[0].step == 6
    # The scaler skips every step from there on; the probe flags them all.
    assert [p.scalars["amp_skipped"] for p in link.points][5:] == [1.0] * 5


def test_a_nan_that_only_the_scaler_sees_is_caught_after_skip_limit(tmp_path: Path) -> None:
    """A NaN born in the backward (finite loss) makes the scaler skip every step: past
    SKIP_LIMIT skips in a row it is a NaN bug, not the scaler's business."""
    from tuidebug.probe.layers.sampler import SKIP_LIMIT

    probe, link = make(tmp_path)
    model_steps = SKIP_LIMIT + 4
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    try:
        for _ in range(model_steps):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
                out.register_hook(lambda g: g * float("nan"))  # flows into every gradient
                loss = torch.nn.functional.mse_loss(out.float(), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    finally:
        probe.finish()
        probe.remove_hooks()
    assert all(p.scalars["amp_skipped"] == 1.0 for p in link.points)
    reports = link.of(NonFinite)
    # Tripped at step SKIP_LIMIT; the replay cannot reproduce a NaN made by the script's own
    # tensor hook, so the next step's sample locates and reports it.
    assert reports and SKIP_LIMIT <= reports[0].step <= SKIP_LIMIT + 1


def test_save_now_and_restore_round_trip_the_scaler(tmp_path: Path) -> None:
    probe, link = make(tmp_path)
    path = str(tmp_path / "checkpoints" / "step-00000003.pt")
    saved_state: dict[str, Any] = {}
    after: dict[str, Any] = {}

    def on_step(i: int, p: Probe, scaler: torch.amp.GradScaler) -> None:
        if i == 1:
            p.handle_command(Command(name="ckpt-save"))  # applied at step 3's boundary
            # What that boundary saves: it comes inside scaler.step, before scaler.update.
            saved_state.update(scaler.state_dict())
        if i == 7:
            assert scaler.state_dict() != saved_state  # the skip at step 5 halved the scale
            p.handle_command(Command(name="ckpt-restore", args={"path": path}))
        if i == 8:
            after.update(scaler.state_dict())

    train(probe, 9, poison_step=4, on_step=on_step)
    (saved,) = link.of(CheckpointSaved)
    assert saved.ok and saved.step == 3
    (restored,) = link.of(CheckpointRestored)
    assert restored.ok and "grad scaler" in restored.restored
    assert saved_state["scale"] == 65536.0
    # Restored at step 9's boundary; step 9 itself ran from it and was not skipped.
    assert after == saved_state | {"_growth_tracker": saved_state["_growth_tracker"] + 1}


def amp_checks_run(tmp_path: Path, steps: int, poison: Callable[[int], float]) -> MemoryLink:
    """A bf16 + GradScaler loop under the probe with the checks (a window on steps 1-4 and every
    second step after), its output gradient multiplied by ``poison(i)`` on step ``i``."""
    from tuidebug.probe.extensions import checks

    link = MemoryLink()
    probe = Probe(link)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    checks.install(probe, {"checks_every": 2})
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    try:
        for i in range(steps):
            x, y = torch.randn(32, 8), torch.randn(32, 1)  # a new batch each step
            factor = poison(i)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
                if factor != 1.0:
                    out.register_hook(lambda g, f=factor: g * f)
                loss = torch.nn.functional.mse_loss(out.float(), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    finally:
        probe.finish()
        probe.remove_hooks()
    return link


def alerts(link: MemoryLink) -> list[str]:
    from tuidebug.wire.check_messages import Alert

    return [a.rule for a in link.of(Alert)]


def test_the_checks_take_a_skipped_step_for_no_exploding_gradient(tmp_path: Path) -> None:
    # Step 3 (a checks window) overflows; the scaler skips it.
    link = amp_checks_run(tmp_path, 12, lambda i: math.inf if i == 2 else 1.0)
    assert [p.scalars["amp_skipped"] for p in link.points].count(1.0) == 1
    assert "exploding-gradients" not in alerts(link)


def test_the_checks_still_see_a_nan_the_scaler_skips_every_step(tmp_path: Path) -> None:
    from tuidebug.checks.groups.gradients import SKIPPED_WINDOWS

    # A NaN born in the backward on every step (the loss stays finite): every update skipped.
    link = amp_checks_run(tmp_path, 2 * SKIPPED_WINDOWS + 2, lambda i: math.nan)
    assert all(p.scalars["amp_skipped"] == 1.0 for p in link.points)
    assert "exploding-gradients" in alerts(link)
