"""Live hyperparameters: the real script under the real ``tuidebug run --detach``, driven over
the run's socket as a console drives it; what took effect is what the script itself recorded
(``optimizer.param_groups[0]["lr"]``, the scheduler's base lr, ``dbg.tunable``) step by step.
Schedulers of every kind, in process with the real probe and real torch.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from support import ROOT, start_detached
from test_probe import MemoryLink

from tuidebug.paths import find_run
from tuidebug.probe.extensions import checkpoints, hparams
from tuidebug.probe.probe import Probe
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire import codec
from tuidebug.wire.checkpoint_messages import CheckpointRestored, CheckpointSaved
from tuidebug.wire.client import RunConnection
from tuidebug.wire.hparam_messages import HparamChanged, Hparams
from tuidebug.wire.messages import Command, Message, Notice, Paused, Resumed, RunInfo, Steps

SCRIPT = ROOT / "tests" / "scripts" / "hparams_steady.py"


class Console:
    """One console connection, read message by message from a test."""

    def __init__(self, connection: RunConnection) -> None:
        self.connection = connection
        self.seen: list[Message] = []
        self._batches: AsyncIterator[list[Message]] = connection.batches()
        self._pending: list[Message] = []

    def send(self, command: str, **args: str) -> None:
        self.connection.send(Command(name=command, args=args, rank=-1))

    async def until(self, predicate: Callable[[Message], bool], timeout: float = 30.0) -> Any:
        """Read on until a message for which ``predicate`` holds (the rest of its batch is
        kept for the next call)."""

        async def wait() -> Message:
            while True:
                while self._pending:
                    message = self._pending.pop(0)
                    self.seen.append(message)
                    if predicate(message):
                        return message
                batch = await anext(self._batches, None)
                if batch is None:
                    raise AssertionError("the connection closed")
                self._pending = list(batch)

        return await asyncio.wait_for(wait(), timeout)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.seen if isinstance(m, kind)]


def records(path: Path) -> list[tuple[int, float, float, float]]:
    """The script's own lines: iteration, lr used, scheduler base lr, dropout tunable."""
    rows = []
    for line in path.read_text().splitlines():
        _, i, lr, base, dropout = line.split()
        rows.append((int(i), float(lr), float(base), float(dropout)))
    return rows


def test_an_lr_change_takes_effect_at_the_next_step_and_a_restore_undoes_it(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    record = tmp_path / "record.txt"
    run_id = start_detached(SCRIPT, "2000", "0.02", str(record))
    paths = find_run(run_id)
    assert paths is not None

    async def scenario() -> dict[str, Any]:
        console = Console(await RunConnection.open(paths))
        await console.until(
            lambda m: isinstance(m, Steps) and bool(m.points) and m.points[-1].step >= 5
        )
        console.send("pause")
        p = (await console.until(lambda m: isinstance(m, Paused))).step
        # No heap scan for schedulers until someone asks (a screen opening does).
        assert all(not t.schedulers_known for t in console.of(Hparams))
        console.send("hparams-scan")
        scanned = await console.until(lambda m: isinstance(m, Hparams) and m.schedulers_known)
        assert scanned.optimizers[0].schedulers == ["ExponentialLR"] and scanned.step == p
        # All applied at the boundary the run is paused at, in this order.
        console.send("set-hparam", name="lr", value="0.001")
        console.send("set-hparam", name="lr", value="-1")
        console.send("set-hparam", name="weight_decay", value="nan")
        console.send("set-hparam", name="betas", value="0.9,0.99")
        console.send("set-hparam", name="lr", value="0.01", group="3")
        console.send("set-tunable", name="dropout", value="0.25")
        console.send("set-tunable", name="dropout", value="lots")
        console.send("ckpt-save")
        saved = await console.until(lambda m: isinstance(m, CheckpointSaved))
        console.send("set-hparam", name="lr", value="0.02")
        console.send("set-tunable", name="dropout", value="0.75")
        await console.until(lambda m: isinstance(m, HparamChanged) and m.new == "0.75")
        console.send("resume")
        await console.until(lambda m: isinstance(m, Resumed))
        await console.until(
            lambda m: isinstance(m, Steps) and bool(m.points) and m.points[-1].step >= p + 5
        )
        console.send("pause")
        paused = await console.until(lambda m: isinstance(m, Paused))
        # The console's pause, not the probe's own (a non-finite loss would pause the run
        # first, at a step this test does not expect).
        assert paused.reason == "paused from the console", paused.reason
        q = paused.step
        console.send("ckpt-restore", path=saved.path)
        restored = await console.until(lambda m: isinstance(m, CheckpointRestored))
        back = await console.until(lambda m: isinstance(m, HparamChanged) and m.kind == "restore")
        table = await console.until(lambda m: isinstance(m, Hparams) and m.step == p)
        console.send("resume")
        await console.until(
            lambda m: isinstance(m, Steps) and bool(m.points) and m.points[-1].step >= p + 5
        )
        console.send("stop-run")
        await console.until(lambda m: isinstance(m, RunInfo) and m.ended is not None)
        console.connection.close()
        return {
            "p": p,
            "q": q,
            "saved": saved,
            "restored": restored,
            "back": back,
            "table": table,
            "console": console,
        }

    got = asyncio.run(asyncio.wait_for(scenario(), 120))
    p, q, console = got["p"], got["q"], got["console"]
    rows = {i: (lr, base, dropout) for i, lr, base, dropout in records(record)}

    # Before the change, the script's own schedule: lr = 0.1 * 0.99^(i-1), dropout 0.1.
    for i in range(1, p + 1):
        assert rows[i][0] == pytest.approx(0.1 * 0.99 ** (i - 1), rel=1e-12)
        assert rows[i][1] == 0.1 and rows[i][2] == 0.1
    # The very next step uses the new lr exactly; the scheduler goes on from it (x0.99 a
    # step), and its base lr was scaled by the same factors (0.001 / lr at p, then 20).
    lr_at_p = 0.1 * 0.99**p
    assert rows[p + 1][0] == 0.02 and rows[p + 1][2] == 0.75
    assert rows[p + 2][0] == pytest.approx(0.02 * 0.99, rel=1e-12)
    assert rows[p + 1][1] == pytest.approx(0.1 * 0.02 / lr_at_p, rel=1e-9)
    # The restore of the save (made after the first change) puts that branch back.
    assert q > p + 1 and rows[q][0] == pytest.approx(0.02 * 0.99 ** (q - p - 1), rel=1e-9)
    assert rows[q + 1][0] == 0.001 and rows[q + 1][2] == 0.25
    assert rows[q + 1][1] == pytest.approx(0.1 * 0.001 / lr_at_p, rel=1e-9)
    assert rows[q + 2][0] == pytest.approx(0.001 * 0.99, rel=1e-12)

    changes = [m for m in console.of(HparamChanged) if m.kind == "set"]
    assert [(c.step, c.name, c.new) for c in changes] == [(p, "lr", "0.001"), (p, "lr", "0.02")]
    assert changes[0].old == [repr(lr_at_p)]
    assert "ExponentialLR base lrs scaled x" in changes[0].scheduler
    assert f"at step {p}" in changes[0].text
    tunable = [m for m in console.of(HparamChanged) if m.kind == "tunable"]
    assert [(t.old, t.new) for t in tunable] == [(["0.1"], "0.25"), (["0.25"], "0.75")]
    refusals = [n.text for n in console.of(Notice) if n.level == "error"]
    assert any("lr must be >= 0" in t for t in refusals), refusals
    assert any("weight_decay must be finite" in t for t in refusals), refusals
    assert any("SGD has no betas" in t for t in refusals), refusals
    assert any("no group 3" in t for t in refusals), refusals
    assert any("'lots' is not a number" in t for t in refusals), refusals

    restored, back, table = got["restored"], got["back"], got["table"]
    assert restored.ok and restored.step == p
    assert back.text == "restored: lr back to 0.001, dropout back to 0.25"
    assert any(n.text == back.text for n in console.of(Notice))
    (group,) = table.optimizers[0].groups
    assert group.lr == 0.001 and group.momentum == 0.9
    assert table.optimizers[0].schedulers == ["ExponentialLR"]
    assert [(t.name, t.value, t.default) for t in table.tunables] == [("dropout", "0.25", "0.1")]

    # The save carries the changes made before it, and the tunables.
    meta = torch.load(got["saved"].path, weights_only=True)["metadata"]["hparams"]
    assert [(c["step"], c["name"], c["new"]) for c in meta["changes"]] == [
        (p, "lr", "0.001"),
        (p, "dropout", "0.25"),
    ]
    assert meta["tunables"] == {"dropout": 0.25}

    # The run's history keeps every change (retention "all") for a console attaching later.
    store = HistoryStore(paths.history, readonly=True)
    try:
        kinds = [type(codec.decode_body(b)).__name__ for b in store.iter_event_bodies()]
    finally:
        store.close()
    assert kinds.count("HparamChanged") == 5  # two sets, two tunables, the restore


def _probe(tmp_path: Path) -> tuple[Probe, MemoryLink]:
    link = MemoryLink()
    probe = Probe(link)  # type: ignore[arg-type]
    probe.install_auto_hooks()
    checkpoints.install(probe, {"run_folder": str(tmp_path)})
    hparams.install(probe, {})
    return probe, link


def _train(
    tmp_path: Path,
    make: Callable[[torch.optim.Optimizer], Any],
    commands: list[dict[str, str]],
    *,
    adam: bool = False,
    at: int = 3,
    steps: int = 8,
    plateau: bool = False,
) -> tuple[list[float], MemoryLink, Any]:
    """Train ``steps`` steps; post ``commands`` after step ``at``; the lr each step used."""
    probe, link = _probe(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=0.1)
        if adam
        else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    )
    scheduler = make(opt)
    used = []
    try:
        for i in range(1, steps + 1):
            used.append(opt.param_groups[0]["lr"])
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()  # the boundary (auto hooks)
            if scheduler is not None:
                scheduler.step(1.0) if plateau else scheduler.step()
            if i == at:
                for args in commands:
                    probe.handle_command(Command(name="set-hparam", args=args))
    finally:
        probe.finish()
        probe.remove_hooks()
    return used, link, scheduler


def _changes(link: MemoryLink) -> list[HparamChanged]:
    return [m for m in link.of(HparamChanged) if m.kind == "set"]


def test_a_closed_form_scheduler_keeps_its_shape_from_the_new_value(tmp_path: Path) -> None:
    # LambdaLR computes base_lr * f(epoch): without scaling base_lrs it would overwrite.
    def f(epoch: int) -> float:
        return 1.0 / (1 + epoch)

    used, link, sched = _train(
        tmp_path,
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, f),
        [{"name": "lr", "value": "0.02"}],
    )
    # The command lands at the boundary of step 4 (inside its optimizer.step()), before that
    # step's scheduler.step(): epoch 4 is computed from the scaled base.
    old = 0.1 * f(3)
    assert used[:4] == pytest.approx([0.1 * f(e) for e in range(4)])
    assert used[4:] == pytest.approx([0.1 * 0.02 / old * f(e) for e in range(4, 8)])
    (change,) = _changes(link)
    assert change.step == 4 and change.scheduler == f"LambdaLR base lrs scaled x{0.02 / old:.3g}"
    assert sched.base_lrs == pytest.approx([0.1 * 0.02 / old])


def test_plateau_keeps_the_new_lr_and_unknown_schedulers_are_a_warning(tmp_path: Path) -> None:
    used, link, _ = _train(
        tmp_path,
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=1000),
        [{"name": "lr", "value": "0.03"}],
        plateau=True,
    )
    assert used[4:] == [0.03] * 4
    assert (
        _changes(link)[0].scheduler
        == "ReduceLROnPlateau keeps it (lowers it from there on a plateau)"
    )

    class Mine(torch.optim.lr_scheduler.LRScheduler):
        def get_lr(self) -> list[float]:  # type: ignore[override]
            return [base * 0.5 for base in self.base_lrs]

    used, link, _ = _train(tmp_path, Mine, [{"name": "lr", "value": "0.02"}])
    note = _changes(link)[0].scheduler
    assert note.startswith("warning: Mine is not one of torch's schedulers"), note
    assert "overwrite" in note
    warned = [n for n in link.of(Notice) if n.level == "warning"]
    assert warned and "Mine" in warned[0].text


def test_one_cycle_is_scaled_and_cycling_momentum_warns(tmp_path: Path) -> None:
    def one_cycle(o: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20)

    commands = [{"name": "lr", "value": "0.05"}, {"name": "betas", "value": "0.8, 0.95"}]
    used, link, _ = _train(tmp_path, one_cycle, commands, adam=True)
    bare, _, _ = _train(tmp_path, one_cycle, [], adam=True)
    # OneCycleLR recomputes the lr from the group's initial/max/min lr each step: all scaled
    # by new/old, the rest of the cycle is the unchanged one times that factor.
    assert used[:4] == bare[:4]
    factor = used[4] / bare[4]
    assert factor != pytest.approx(1.0)
    assert used[4:] == pytest.approx([lr * factor for lr in bare[4:]])
    lr_change, betas_change = _changes(link)
    assert lr_change.scheduler.startswith("OneCycleLR base lrs scaled x")
    assert betas_change.new == "0.8,0.95"
    assert betas_change.scheduler == (
        "warning: OneCycleLR cycles betas: its next step() will overwrite it"
    )


def test_groups_and_values_are_validated(tmp_path: Path) -> None:
    probe, link = _probe(tmp_path)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(
        [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=0.1
    )
    bad = [
        {"name": "momentum", "value": "0.9"},
        {"name": "betas", "value": "0.9"},
        {"name": "betas", "value": "0.9,1.0"},
        {"name": "lr", "value": "inf"},
        {"name": "eps", "value": "1e-8"},
        {"name": "lr", "value": "0.2", "optimizer": "optimizer9"},
    ]
    good = [
        {"name": "weight_decay", "value": "0.01", "group": "1"},
        {"name": "lr", "value": "0.2"},
    ]
    try:
        for _ in range(2):
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            for args in bad + good:
                probe.handle_command(Command(name="set-hparam", args=args))
            bad, good = [], []
    finally:
        probe.remove_hooks()
    errors = [n.text for n in link.of(Notice) if n.level == "error"]
    assert len(errors) == 6, errors
    assert "Adam has no momentum (it has betas)" in errors[0]
    assert "betas is a pair" in errors[1] and "each beta must be in [0, 1)" in errors[2]
    assert "lr must be finite" in errors[3] and "'eps' is not one of" in errors[4]
    assert "no optimizer 'optimizer9' (known: optimizer)" in errors[5]
    wd, lr = _changes(link)
    assert (wd.groups, wd.old, wd.new) == ([1], ["0.0"], "0.01")
    assert (lr.groups, lr.old, lr.text) == (
        [0, 1],
        ["0.1", "0.5"],
        "lr 0.1/0.5 -> 0.2 (optimizer, 2 groups) at step 2",
    )
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.01]


def test_the_inert_hook_returns_the_default(tmp_path: Path) -> None:
    # A fresh interpreter: no probe, so no table of tunables (one may live in this process).
    code = (
        "import sys, tuidebug; from tuidebug.probe import hook_api; "
        "assert hook_api.tunables() is None; d = tuidebug.attach(object()); "
        "assert not d.active; "
        "print(d.tunable('dropout', 0.1), d.tunable('name', 'x'), d.tunable([1], 3)); "
        "assert 'torch' not in sys.modules"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["0.1", "x", "3"]


def test_resume_gives_tunables_back_even_before_the_script_declares_them(tmp_path: Path) -> None:
    def run(options: dict[str, Any], set_at: int | None) -> tuple[list[float], Probe]:
        link = MemoryLink()
        probe = Probe(link)  # type: ignore[arg-type]
        probe.install_auto_hooks()
        checkpoints.install(probe, {"run_folder": str(tmp_path), **options})
        hparams.install(probe, {})
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dbg = probe.attach(model, opt)  # --resume applies here, before any tunable exists
        seen = []
        try:
            for i in range(1, 5):
                seen.append(dbg.tunable("dropout", 0.1))
                model(torch.randn(2, 4)).sum().backward()
                opt.step()
                dbg.step()
                if i == set_at:
                    probe.handle_command(
                        Command(name="set-tunable", args={"name": "dropout", "value": "0.4"})
                    )
                    probe.handle_command(Command(name="ckpt-save"))
        finally:
            probe.remove_hooks()
        return seen, probe

    seen, _ = run({}, set_at=2)
    assert seen == [0.1, 0.1, 0.1, 0.4]  # set and saved at the boundary of step 3
    (saved,) = (tmp_path / "checkpoints").glob("*.pt")
    seen, probe = run({"resume": str(saved)}, set_at=None)
    assert probe.step == 4 + 3 and seen == [0.4] * 4
