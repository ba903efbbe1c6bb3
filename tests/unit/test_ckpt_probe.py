"""The checkpoint extension of the probe, on a real training loop with an in-memory sink.

Commands are posted the way the probe's I/O thread posts them (``handle_command``); the gate
runs them at the next boundary on the training thread. Losses are read from the points the
probe pushed, as the console would see them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_probe import MemoryLink

from tuidebug.ckpt import ResumableLoader, list_checkpoints
from tuidebug.probe.extensions import checkpoints as ext
from tuidebug.probe.probe import Probe
from tuidebug.wire.checkpoint_messages import (
    CheckpointConfig,
    CheckpointDiff,
    CheckpointRestored,
    CheckpointSaved,
)
from tuidebug.wire.messages import Command, Notice

OnStep = Callable[[int, Probe], None]


def make(tmp_path: Path, **options: Any) -> tuple[Probe, MemoryLink]:
    link = MemoryLink()
    probe = Probe(link)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    ext.install(probe, {"run_folder": str(tmp_path), **options})
    return probe, link


def train(
    probe: Probe,
    steps: int,
    on_step: OnStep | None = None,
    *,
    hook: bool = False,
    width: int = 8,
    loader: bool = False,
) -> None:
    """Dropout, Adam, a StepLR and per-step random data: every kind of state a resume needs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, width), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(width, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
    data = ResumableLoader(torch.randn(48, 5), batch_size=8, seed=1) if loader else None
    dbg = probe.attach(model, opt, sched) if hook else None
    i = 0
    try:
        while i < steps:
            batches = iter(data) if data is not None else iter(lambda: torch.randn(8, 5), None)
            for batch in batches:
                x, y = batch[:, :4], batch[:, 4:]
                loss = ((model(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if dbg is not None:
                    dbg.step(loss=loss)
                if on_step is not None:
                    on_step(i, probe)
                i += 1
                if i >= steps:
                    break
    finally:
        probe.finish()
        probe.remove_hooks()


def losses(link: MemoryLink) -> list[tuple[int, float]]:
    return [(p.step, p.loss) for p in link.points if p.loss is not None]


def post_at(when: int, name: str, **args: str) -> OnStep:
    def on_step(i: int, probe: Probe) -> None:
        if i == when:
            probe.handle_command(Command(name=name, args=args))

    return on_step


def test_save_now_at_the_next_boundary(tmp_path: Path) -> None:
    probe, link = make(tmp_path)
    train(probe, 6, post_at(2, "ckpt-save"))
    (config,) = link.of(CheckpointConfig)
    assert config.folder == str(tmp_path / "checkpoints")
    (saved,) = link.of(CheckpointSaved)
    assert saved.ok and saved.step == 4 and saved.reason == "manual"  # posted after step 3
    assert saved.loss == dict(losses(link))[4]
    infos = list_checkpoints(tmp_path / "checkpoints")
    assert [(i.name, i.step, i.status) for i in infos] == [("step-00000004.pt", 4, "ok")]
    assert any("saved step-00000004.pt" in n.text for n in link.of(Notice))


def test_save_every_and_keep(tmp_path: Path) -> None:
    probe, link = make(tmp_path, save_every=2, keep=2)
    train(probe, 9)
    assert [s.step for s in link.of(CheckpointSaved)] == [2, 4, 6, 8]
    assert all(s.ok and s.reason == "every" for s in link.of(CheckpointSaved))
    names = sorted(i.name for i in list_checkpoints(tmp_path / "checkpoints"))
    assert names == ["step-00000006.pt", "step-00000008.pt"]


def test_a_failed_save_is_a_message_and_training_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    probe, link = make(tmp_path, checkpoint_dir=str(blocker / "sub"))
    train(probe, 5, post_at(1, "ckpt-save"))
    (saved,) = link.of(CheckpointSaved)
    assert not saved.ok and saved.error
    assert max(s for s, _ in losses(link)) == 5  # the run went on
    assert any(n.level == "error" for n in link.of(Notice))


def test_live_restore_sets_the_step_back_and_replays_exactly(tmp_path: Path) -> None:
    probe, link = make(tmp_path)
    path = str(tmp_path / "checkpoints" / "step-00000004.pt")

    def on_step(i: int, p: Probe) -> None:
        if i == 2:
            p.handle_command(Command(name="ckpt-save"))
        if i == 8:
            p.handle_command(Command(name="ckpt-restore", args={"path": path}))

    train(probe, 15, on_step)
    (restored,) = link.of(CheckpointRestored)
    assert restored.ok and restored.step == 4 and restored.from_step == 10
    assert "RNG states" in restored.restored and "1 scheduler(s)" in restored.restored
    seen = losses(link)
    first = {s: v for s, v in seen[:10]}
    branch = {s: v for s, v in seen[10:]}
    assert sorted(branch) == list(range(5, 10))
    for step in range(5, 10):  # bit for bit: model, Adam, scheduler and RNG all came back
        assert branch[step] == first[step], step


def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path: Path) -> None:
    other, _ = make(tmp_path / "other")
    train(other, 3, post_at(1, "ckpt-save"), width=16)
    wrong = str(tmp_path / "other" / "checkpoints" / "step-00000003.pt")
    baseline, base_link = make(tmp_path / "baseline")
    train(baseline, 6)
    probe, link = make(tmp_path)
    train(probe, 6, post_at(3, "ckpt-restore", path=wrong))
    (refused,) = link.of(CheckpointRestored)
    assert not refused.ok and refused.step == 5 and refused.from_step == 5
    assert any("shape" in line for line in refused.problems)
    assert "does not fit" in refused.error
    # Nothing changed: not the weights, the optimizer, the RNG, nor the step count.
    assert losses(link) == losses(base_link)


def test_a_restore_of_a_missing_or_bad_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    probe, link = make(tmp_path)

    def on_step(i: int, p: Probe) -> None:
        if i == 1:
            p.handle_command(Command(name="ckpt-restore", args={"path": str(bad)}))
            p.handle_command(Command(name="ckpt-restore", args={"path": str(tmp_path / "no")}))

    train(probe, 4, on_step)
    refused = link.of(CheckpointRestored)
    assert [r.ok for r in refused] == [False, False] and all(r.error for r in refused)


def test_diff_against_the_live_model(tmp_path: Path) -> None:
    probe, link = make(tmp_path)
    path = str(tmp_path / "checkpoints" / "step-00000002.pt")

    def on_step(i: int, p: Probe) -> None:
        if i == 0:
            p.handle_command(Command(name="ckpt-save"))
        if i == 5:
            p.handle_command(Command(name="ckpt-diff", args={"path": path}))

    train(probe, 7, on_step)
    (diff,) = link.of(CheckpointDiff)
    assert diff.ok and not diff.missing and not diff.unexpected and diff.compared == 4
    changes = [c[1] for c in diff.changes]
    assert changes == sorted(changes, reverse=True) and changes[0] > 0


@pytest.mark.parametrize("hook", [False, True])
def test_resume_in_a_new_probe_is_exact(tmp_path: Path, hook: bool) -> None:
    """N steps + save, then a fresh probe (as in a new process) with --resume + N steps."""
    probe, link = make(tmp_path, save_every=5)
    train(probe, 10, hook=hook, loader=hook)
    full = dict(losses(link))
    path = str(tmp_path / "checkpoints" / "step-00000005.pt")

    resumed, link2 = make(tmp_path / "second", resume=path)
    torch.manual_seed(123)  # a different start: everything must come from the checkpoint
    train(resumed, 5 if hook else 6, hook=hook, loader=hook)
    (restored,) = link2.of(CheckpointRestored)
    assert restored.ok and restored.kind == "resume" and restored.step == 5
    seen = dict(losses(link2))
    if hook:
        # Applied at attach, before the loop: nothing is discarded, the data position too.
        assert restored.discarded == 0 and "data position" in restored.restored
        assert sorted(seen) == [6, 7, 8, 9, 10]
    else:
        # Applied at the first boundary: step 1 was computed from the fresh start.
        assert restored.discarded == 1
        assert sorted(seen) == [1, 6, 7, 8, 9, 10]
    for step in range(6, 11):
        assert seen[step] == full[step], step
