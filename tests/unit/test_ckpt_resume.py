"""Exact resume in a new process, fit checks, and restores that must change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ckpt_fixtures import HERE, ROOT, make_lightning_file, small_model, trained
from torch import nn

from tuidebug.ckpt import (
    DoesNotFit,
    ResumableLoader,
    apply_training_state,
    capture_training_state,
    check_fits,
    load_training_state,
    resume,
    save_now,
)

SCRIPT = HERE / "ckpt_train_script.py"


def _start(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _losses(proc: subprocess.Popen[str]) -> list[tuple[int, str]]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return [(d["step"], d["loss"]) for d in map(json.loads, out.splitlines())]


def test_exact_resume_in_a_new_process(tmp_path: Path) -> None:
    """26 uninterrupted steps == 13 (mid-epoch) or 20 (epoch end) + save + new process + rest.

    The loader has 10 batches per epoch and shuffles; the run draws from torch (dropout),
    python random and numpy; Adam and StepLR carry state. Losses compared bit for bit.
    """
    full = _start("--steps", "26")
    first = _start("--steps", "20", "--save-at", "13", "20", "--out", str(tmp_path))
    reference = _losses(full)
    head = _losses(first)
    assert head == reference[:20]
    mid = _start("--steps", "26", "--resume", str(tmp_path / "step-00000013.pt"))
    end = _start("--steps", "26", "--resume", str(tmp_path / "step-00000020.pt"))
    assert _losses(mid) == reference[13:]
    assert _losses(end) == reference[20:]
    assert len(reference) == 26 and len({loss for _, loss in reference}) == 26


def test_does_not_fit_changes_nothing(tmp_path: Path) -> None:
    src = small_model(out=2)
    opt = trained(src)
    save_now(tmp_path, models={"model": src}, optimizers={"opt": opt}, step=5, epoch=0)
    state = load_training_state(tmp_path / "step-00000005.pt")

    live = small_model(out=3)
    live_opt = trained(live, steps=1)
    before = {k: v.clone() for k, v in live.state_dict().items()}
    opt_before = live_opt.state_dict()["state"][0]["exp_avg"].clone()
    rng_before = torch.get_rng_state()
    with pytest.raises(DoesNotFit) as info:
        apply_training_state(state, models={"model": live}, optimizers={"opt": live_opt})
    diff = info.value.diff
    assert not diff.fits
    assert {m.key for m in diff.shape_mismatches} >= {"model.2.weight", "model.2.bias"}
    assert "does not fit" in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in live.state_dict().items())
    assert torch.equal(live_opt.state_dict()["state"][0]["exp_avg"], opt_before)
    assert torch.equal(torch.get_rng_state(), rng_before)

    extra = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 2))
    d = check_fits(state, {"model": extra})
    assert d.missing == ["model.3.weight", "model.3.bias"] and not d.unexpected

    half = small_model(out=2).half()
    d = check_fits(state, {"model": half})
    assert len(d.dtype_mismatches) == 4 and not d.fits

    sgd = torch.optim.SGD(list(small_model().parameters())[:2], lr=0.1)
    d = check_fits(state, {"model": small_model()}, {"opt": sgd})
    assert not d.fits and any("params saved" in p for p in d.problems)


def test_restore_sets_everything_back(tmp_path: Path) -> None:
    model = small_model()
    opt = trained(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    loader = ResumableLoader(list(range(10)), batch_size=3, seed=1)
    it = iter(loader)
    next(it)
    state = capture_training_state(
        models={"m": model},
        optimizers={"o": opt},
        schedulers={"s": sched},
        step=9,
        epoch=0,
        loaders={"l": loader},
    )
    save_now(
        tmp_path,
        models={"m": model},
        optimizers={"o": opt},
        schedulers={"s": sched},
        step=9,
        epoch=0,
        loaders={"l": loader},
    )
    expect_rest = [b.tolist() for b in it]
    expect_draw = torch.rand(4)

    model2 = small_model(out=2)
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 2)
    loader2 = ResumableLoader(list(range(10)), batch_size=3, seed=1)
    got = resume(
        tmp_path / "step-00000009.pt",
        models={"m": model2},
        optimizers={"o": opt2},
        schedulers={"s": sched2},
        loaders={"l": loader2},
    )
    assert got["step"] == 9 == state["step"]
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True)
    )
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    # the RNG was set back to the saved state (and the loader does not draw from it)
    assert [b.tolist() for b in loader2] == expect_rest
    assert torch.equal(torch.rand(4), expect_draw)


def test_resume_from_lightning_and_plain_state_dict(tmp_path: Path) -> None:
    state = load_training_state(make_lightning_file(tmp_path / "l.ckpt"))
    wrapped = nn.Module()
    wrapped.model = small_model()  # Lightning keys are "model.0.weight"...
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-2)
    assert apply_training_state(state, models={"pl": wrapped}, optimizers={"o": opt}) == 120
    torch.save(small_model().state_dict(), tmp_path / "plain.pt")
    m = small_model()
    assert apply_training_state(load_training_state(tmp_path / "plain.pt"), models={"m": m}) == 0


def test_resumable_loader_order() -> None:
    data = list(range(10))
    a = ResumableLoader(data, batch_size=4, seed=3)
    epoch0 = [b.tolist() for b in a]
    epoch1 = [b.tolist() for b in a]
    assert sorted(i for batch in epoch0 for i in batch) == data and epoch0 != epoch1
    b = ResumableLoader(data, batch_size=4, seed=3)
    b.load_state_dict({"seed": 3, "epoch": 1, "batches_done": 1})
    assert [x.tolist() for x in b] == epoch1[1:]
    assert b.state_dict() == {"seed": 3, "epoch": 2, "batches_done": 0}
    g = torch.get_rng_state()
    list(ResumableLoader(data, batch_size=4, seed=3))
    assert torch.equal(torch.get_rng_state(), g), "the loader must not draw from the global RNG"
