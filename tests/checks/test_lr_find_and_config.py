"""The LR finder leaves the run's state as it found it; [tool.tuidebug] is read; rules are cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from tests.support import DEMOS, ROOT, TUIDEBUG
from tuidebug.checks.config import load_config
from tuidebug.checks.lrfind import LrFinder, smooth, suggest
from tuidebug.probe.probe import Probe
from tuidebug.wire.check_messages import LrFindResult


def test_lr_find_restores_model_optimizer_and_scheduler() -> None:
    torch.manual_seed(0)
    probe = Probe(None)
    sent: list = []  # type: ignore[type-arg]
    probe.send = sent.append  # type: ignore[method-assign]
    probe.install_auto_hooks()
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5)
    finder = LrFinder(probe)
    probe.add_observer(finder)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))

    def step() -> None:
        idx = torch.randint(0, 256, (32,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
        scheduler.step()

    for _ in range(3):
        step()
    finder.request({"steps": "20", "start": "1e-5", "end": "1"})
    step()  # the test starts at this boundary: the state is copied here
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = optimizer.state_dict()
    exp_avg = opt_before["state"][0]["exp_avg"].clone()
    epoch = scheduler.last_epoch
    for _ in range(25):
        step()
        if any(isinstance(m, LrFindResult) for m in sent):
            break
    result = next(m for m in sent if isinstance(m, LrFindResult))
    assert result.restored and len(result.lrs) >= 5
    assert result.lrs == sorted(result.lrs)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], exp_avg)
    assert optimizer.param_groups[0]["lr"] == opt_before["param_groups"][0]["lr"]
    assert scheduler.last_epoch == epoch
    probe.remove_hooks()


def test_suggest_picks_the_steepest_descent() -> None:
    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
    losses = smooth(
        [2.0 - (1.5 if -3.5 < -6 + i * 0.25 < -1.5 else 0) * min(1, i / 25) for i in range(25)]
    )
    assert suggest(lrs, losses) is not None
    assert suggest(lrs[:3], losses[:3]) is None


def test_config_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tuidebug]\nignore = ["same-batch"]\nfail-on = "error"\nsample-every = 7\n'
        '[tool.tuidebug.rules.update-ratio]\nseverity = "info"\nlow = 1e-7\n'
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    config = load_config(sub)
    assert config.ignore == {"same-batch"} and config.fail_on == "error"
    assert config.sample_every == 7
    assert config.severity("update-ratio", "warning") == "info"
    assert config.option("update-ratio", "low", 1e-5) == 1e-7


def test_engine_removes_every_patch_on_close() -> None:
    import warnings

    from torch.nn import functional as F
    from torch.utils.data import DataLoader
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    from tuidebug.checks.config import ChecksConfig
    from tuidebug.checks.engine import ChecksEngine
    from tuidebug.checks.groups.gradients import _SCHEDULER_CLASS

    originals = (
        F.cross_entropy,
        _BaseDataLoaderIter.__next__,
        DataLoader.__iter__,
        warnings.showwarning,
        _SCHEDULER_CLASS.__init__,
    )
    engine = ChecksEngine(lambda m: None, 0, ChecksConfig(), overfit_batch=True)
    assert F.cross_entropy is not originals[0]  # the first window is open
    engine.close()
    after = (
        F.cross_entropy,
        _BaseDataLoaderIter.__next__,
        DataLoader.__iter__,
        warnings.showwarning,
        _SCHEDULER_CLASS.__init__,
    )
    assert after == originals


def test_schedule_is_an_integer_test() -> None:
    from tuidebug.checks.config import ChecksConfig
    from tuidebug.checks.engine import ChecksEngine

    engine = ChecksEngine(lambda m: None, 0, ChecksConfig(), every=50)
    try:
        sampled = [s for s in range(1, 202) if engine.schedule(s)]
        assert sampled == [1, 2, 3, 4, 51, 101, 151, 201]
    finally:
        engine.close()


def test_lr_find_cli(run_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [*TUIDEBUG, "lr-find", "--steps", "40", str(DEMOS / "classifier.py"), "--steps", "200"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "suggested learning rate" in proc.stdout or "no rate suggested" in proc.stdout
    assert "restored" in proc.stdout


def test_probe_side_imports_no_textual_or_rich() -> None:
    code = (
        "import sys, tuidebug.checks.engine, tuidebug.checks.lrfind, "
        "tuidebug.probe.extensions.checks, tuidebug.wire.check_messages; "
        "print(' '.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    loaded = {name.split(".")[0] for name in out.split()}
    assert "textual" not in loaded and "rich" not in loaded


def test_console_side_loads_no_torch() -> None:
    code = (
        "import sys, tuidebug.console.extensions.checks, tuidebug.console.screens.alerts, "
        "tuidebug.checks.cli; print(' '.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "torch" not in {name.split(".")[0] for name in out.split()}
