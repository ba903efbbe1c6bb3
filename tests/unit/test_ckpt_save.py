"""Atomic save: weights_only-loadable content, manifest, prune, failures, kill during save."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ckpt_fixtures import HERE, ROOT, small_model, trained

from tuidebug.ckpt import (
    atomic_save,
    capture_training_state,
    load_training_state,
    prune,
    read_manifest,
    save_now,
    verify,
)
from tuidebug.ckpt.rng import capture_rng_states, restore_rng_states
from tuidebug.ckpt.save import clean_temp_files, sha256_file


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    return env


def _tmp_files(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if ".tmp." in n]


def test_state_loads_with_weights_only(tmp_path: Path) -> None:
    model = small_model()
    opt = trained(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    scaler = torch.amp.GradScaler("cpu")
    meta = {
        "loss": torch.tensor(0.5, requires_grad=True),
        "args": argparse.Namespace(lr=0.1),
        "path": Path("/x"),
        "np": np.float32(2.0),
    }
    state = capture_training_state(
        models={"m": model},
        optimizers={"o": opt},
        schedulers={"s": sched},
        scaler=scaler,
        step=3,
        epoch=None,
        metadata=meta,
    )
    res = atomic_save(state, tmp_path / "a.pt")
    assert res.ok, res.error
    # plain torch, no tuidebug code involved: the safe loader accepts every value
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert loaded["step"] == 3 and loaded["epoch"] is None
    assert loaded["metadata"]["loss"] == 0.5 and loaded["metadata"]["args"] == {"lr": 0.1}
    assert loaded["metadata"]["script"] and loaded["rng"]["numpy"] is not None
    assert set(loaded) >= {"models", "optimizers", "schedulers", "scaler", "rng", "loaders"}


def test_rng_round_trip() -> None:
    saved = capture_rng_states()
    a = (random.random(), np.random.rand(), torch.rand(3), random.gauss(0, 1))
    restore_rng_states(saved)
    b = (random.random(), np.random.rand(), torch.rand(3), random.gauss(0, 1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and a[3] == b[3]


def test_manifest_verify_and_prune(tmp_path: Path) -> None:
    model, opt = small_model(), None
    opt = trained(model)
    (tmp_path / "user_file.pt").write_bytes(b"mine")
    for step in range(1, 6):
        r = save_now(
            tmp_path,
            models={"m": model},
            optimizers={"o": opt},
            step=step,
            epoch=0,
            metadata={"loss": 1.0 / step},
        )
        assert r.ok and r.sha256 == sha256_file(r.path)
    entries = read_manifest(tmp_path)
    assert [e["step"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[-1]["loss"] == 0.2 and entries[-1]["sha256"] == r.sha256
    assert all(v.ok for v in verify(tmp_path))
    removed = prune(tmp_path, keep=2)
    assert sorted(removed) == [f"step-0000000{i}.pt" for i in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "step-00000004.pt",
        "step-00000005.pt",
        "user_file.pt",
    ]
    assert [e["step"] for e in read_manifest(tmp_path)] == [4, 5]
    r = save_now(tmp_path, models={"m": model}, optimizers={"o": opt}, step=6, epoch=0, keep=1)
    assert r.ok and r.removed == ["step-00000004.pt", "step-00000005.pt"]
    # a damaged file is reported by verify
    with open(tmp_path / "step-00000006.pt", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert [v.ok for v in verify(tmp_path)] == [False]


def test_unpicklable_state_is_a_failed_save(tmp_path: Path) -> None:
    good = atomic_save({"step": 1, "w": torch.ones(2)}, tmp_path / "c.pt")
    res = atomic_save({"step": 2, "f": lambda: 0}, tmp_path / "c.pt")
    assert not res.ok and res.error and "\n" not in res.error
    assert sha256_file(tmp_path / "c.pt") == good.sha256  # previous file untouched
    assert read_manifest(tmp_path)[0]["sha256"] == good.sha256
    assert _tmp_files(tmp_path) == []
    res = atomic_save({"step": 1}, tmp_path / "no" / "such" / "dir.pt")
    assert not res.ok and "does not exist" in res.error


def test_full_disk_is_a_failed_save(tmp_path: Path) -> None:
    """EFBIG through RLIMIT_FSIZE stands in for ENOSPC: the write fails part way."""
    prev = atomic_save({"step": 1, "w": torch.ones(4)}, tmp_path / "prev.pt")
    out = subprocess.run(
        [sys.executable, str(HERE / "ckpt_save_failures.py"), "full-disk", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["ok"] is False and "too large" in report["error"].lower()
    assert report["files"] == sorted([".manifest.lock", "manifest.json", "prev.pt"])
    assert [v.ok for v in verify(tmp_path)] == [True]
    assert sha256_file(tmp_path / "prev.pt") == prev.sha256


def _drop_dac_override() -> None:
    """Drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH before exec so that root obeys file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_error_is_a_failed_save(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs["preexec_fn"] = _drop_dac_override
        try:
            out = subprocess.run(
                [sys.executable, str(HERE / "ckpt_save_failures.py"), "permission", str(folder)],
                capture_output=True,
                text=True,
                env=_env(),
                timeout=60,
                **kwargs,
            )  # type: ignore[call-overload]
        except subprocess.SubprocessError as exc:
            pytest.skip(f"cannot drop root's permission override here: {exc}")
        report = json.loads(out.stdout)
        assert report["ok"] is False and "Permission denied" in report["error"]
        assert report["files"] == []
    finally:
        folder.chmod(0o755)


def test_stale_temp_files_are_cleaned(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".step-00000001.pt.tmp.{int(dead.stdout)}.abcdef123456"
    stale.write_bytes(b"partial")
    live = tmp_path / f".x.pt.tmp.{os.getppid()}.abcdef123456"  # a live process's save
    live.write_bytes(b"in progress")
    r = atomic_save({"step": 1}, tmp_path / "a.pt")
    assert r.ok and stale.name in r.removed
    assert not stale.exists() and live.exists()
    assert clean_temp_files(tmp_path) == []


def test_kill_during_save_loop(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "ckpt_kill_saver.py"), str(tmp_path), "--kills", "20"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["kills"] == 20
    assert report["errors"] == []
    assert report["temp_seen"] >= 1, "no kill landed during a save; the test proved nothing"
    assert _tmp_files(tmp_path) == []
    finals = sorted(tmp_path.glob("step-*.pt"))
    assert finals
    for f in finals:  # every file under a final name is a complete, loadable checkpoint
        assert load_training_state(f)["step"] > 0
    assert all(v.ok for v in verify(tmp_path))
