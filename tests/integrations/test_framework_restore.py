"""Restore of a framework's own checkpoint into its live run (the console's ``r``), for real.

Each test drives a real ``tuidebug run --detach`` of a demo over its socket as the console
does: pause at step a, save now (the framework's own ``.ckpt`` / ``checkpoint-a``), run on
to a + K, restore, run to a + K again, and compare the K steps after the save with the K
steps after the restore.

What can be compared honestly: a live run cannot rewind its data loader (the running epoch
goes on with its next batch), so after a restore the batches of a multi-batch epoch are not
those that followed the save. The demos are run with an epoch of one batch, always the same
(Lightning: 64 examples, no shuffle; Hugging Face: one sequence), so every step trains on the
same data and the only state that decides the next losses is what the restore puts back:
weights, optimizer, LR scheduler, step counters and the random generators (dropout). Then the
losses after the restore equal those after the save bit for bit, which fails if any of them
was left out; the parameters right after the restore also equal the saved ones (a diff
against the live model, computed by the probe). Without the framework restorer, the generic
restore would set neither the trainer's step counters nor its schedulers nor the generators:
the run would go on numbering from the trainer's own step, and the test fails.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from framework_runs import DEMOS, Console, start

from tuidebug.wire.checkpoint_messages import (
    CheckpointConfig,
    CheckpointDiff,
    CheckpointRestored,
    CheckpointSaved,
)
from tuidebug.wire.messages import Message, Notice, Paused, StepPoint

K = 4  # steps compared after the save and after the restore


def branch(points: list[StepPoint], start: int) -> list[StepPoint]:
    """Steps start + 1 .. start + K of one branch (the first point of each step)."""
    found: dict[int, StepPoint] = {}
    for point in points:
        if start < point.step <= start + K:
            found.setdefault(point.step, point)
    return [found[s] for s in sorted(found)]


async def paused_at(console: Console, step: int) -> Paused:
    message = await console.wait(lambda m: isinstance(m, Paused))
    assert isinstance(message, Paused) and message.step == step, message
    return message


async def take(console: Console, kind: type[Message]) -> Any:
    return await console.wait(lambda m: isinstance(m, kind))


async def restore_round_trip(console: Console, refusals: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Pause at a, save now, run to a + K, try ``refusals``, restore the save, run to a + K
    again, stop the run. (Lightning saves at the paused boundary, the Trainer at the end of
    that step, once "run-to" lets it go on: the save's message comes before a + K either way.)
    """
    await console.wait_step(3)
    console.send("pause")
    a = (await take(console, Paused)).step
    console.send("ckpt-save")
    console.send("run-to", step=str(a + K))
    saved = await take(console, CheckpointSaved)
    assert isinstance(saved, CheckpointSaved) and saved.ok, saved
    assert saved.step == a
    await paused_at(console, a + K)
    first = branch(console.points, a)
    refused: list[tuple[CheckpointRestored, Notice]] = []
    for path in refusals:
        console.send("ckpt-restore", path=str(path))
        message = await take(console, CheckpointRestored)
        notice = await console.wait(lambda m: isinstance(m, Notice) and m.level == "error")
        assert isinstance(notice, Notice)
        refused.append((message, notice))
    console.send("ckpt-diff", path=saved.path)
    before = await take(console, CheckpointDiff)
    console.send("ckpt-restore", path=saved.path)
    restored = await take(console, CheckpointRestored)
    notice = await console.wait(lambda m: isinstance(m, Notice) and "restored" in m.text)
    console.send("ckpt-diff", path=saved.path)  # right after the restore, still paused
    after = await take(console, CheckpointDiff)
    mark = len(console.points)
    console.send("run-to", step=str(a + K))
    await paused_at(console, a + K)
    second = branch(console.points[mark:], a)
    console.send("stop-run")
    return {
        "a": a,
        "saved": saved,
        "first": first,
        "second": second,
        "refused": refused,
        "before": before,
        "restored": restored,
        "notice": notice,
        "after": after,
    }


def unchanged_weights(diff: CheckpointDiff) -> bool:
    return (
        diff.ok
        and not diff.missing
        and not diff.unexpected
        and not diff.mismatches
        and all(change == 0.0 for _key, change, _n in diff.changes)
    )


def test_lightning_ckpt_restores_into_the_live_trainer(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("lightning")
    demo = DEMOS / "lightning_classifier.py"
    folder = tmp_path / "ck"
    run_id = start(
        "--checkpoint-dir",
        folder,
        demo,
        *("--steps", "3000", "--sleep", "0.005", "--val-every", "0"),
        *("--train-size", "64", "--batch-size", "64", "--no-shuffle"),
        *("--out", tmp_path / "out"),
    )
    corrupt, unsafe, mismatched = (
        tmp_path / n for n in ("corrupt.ckpt", "unsafe.ckpt", "other.ckpt")
    )

    async def drive() -> dict[str, Any]:
        console = await Console.open(run_id)
        try:
            await console.wait_step(3)
            # Files that must be refused, made from the first save of this run.
            saved = await first_save(console)
            make_bad_files(Path(saved.path), corrupt, unsafe, mismatched)
            return await restore_round_trip(console, (corrupt, unsafe, mismatched))
        finally:
            console.close()

    got = asyncio.run(asyncio.wait_for(drive(), 120))
    a, first, second = got["a"], got["first"], got["second"]
    assert [p.step for p in first] == [p.step for p in second] == list(range(a + 1, a + K + 1))
    # The steps after the restore are those after the save, bit for bit.
    assert [p.loss for p in second] == [p.loss for p in first]
    assert [p.scalars["train_acc"] for p in second] == [p.scalars["train_acc"] for p in first]
    restored = got["restored"]
    assert restored.ok and restored.step == a, restored
    assert restored.restored == [
        "model weights",
        "1 optimizer(s)",
        "1 LR scheduler(s)",
        f"step counters (global_step {a})",
        "RNG states",
    ]
    assert "not restored: the data loader's position" in got["notice"].text
    assert not unchanged_weights(got["before"]) and unchanged_weights(got["after"])
    # Refused with a clear reason, and the run went on from where it was.
    (bad, bad_notice), (code, _), (shape, _) = got["refused"]
    assert not bad.ok and "corrupt.ckpt" in bad.error and bad.step == a + K, bad
    assert "refused" in bad_notice.text
    assert not code.ok and "would run code from the file" in code.error, code
    assert not shape.ok and "does not fit" in shape.error, shape
    assert any(
        line.startswith("shape ") and "net.0.weight: [16, 32] saved, [128, 32] live" in line
        for line in shape.problems
    ), shape.problems


async def first_save(console: Console) -> CheckpointSaved:
    """One save now while the run goes on (its file is the model for the bad files)."""
    console.send("ckpt-save")
    saved = await take(console, CheckpointSaved)
    assert isinstance(saved, CheckpointSaved) and saved.ok, saved
    return saved


def make_bad_files(good: Path, corrupt: Path, unsafe: Path, mismatched: Path) -> None:
    """A truncated copy; one that needs a pickled object (a Namespace, as
    ``save_hyperparameters(args)`` can leave); one whose first layer has another shape."""
    data = good.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    ckpt = torch.load(good, weights_only=True)
    torch.save({**ckpt, "hyper_parameters": {"args": argparse.Namespace(lr=1.0)}}, unsafe)
    weights = dict(ckpt["state_dict"])
    weights["net.0.weight"] = torch.zeros(16, weights["net.0.weight"].shape[1])
    torch.save({**ckpt, "state_dict": weights}, mismatched)


def test_hf_checkpoint_folder_restores_into_the_live_trainer(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    demo = DEMOS / "hf_trainer_lm.py"
    out = tmp_path / "out"
    run_id = start(
        demo,
        *("--steps", "3000", "--sleep", "0.005", "--eval-every", "0"),
        *("--train-size", "1", "--out", out),
    )

    async def drive() -> dict[str, Any]:
        console = await Console.open(run_id)
        try:
            config = await console.wait(
                lambda m: isinstance(m, CheckpointConfig) and m.framework == "transformers"
            )
            assert isinstance(config, CheckpointConfig) and config.folder == str(out)
            return await restore_round_trip(console)
        finally:
            console.close()

    got = asyncio.run(asyncio.wait_for(drive(), 120))
    a, first, second = got["a"], got["first"], got["second"]
    assert Path(got["saved"].path) == out / f"checkpoint-{a}"
    assert [p.step for p in first] == [p.step for p in second] == list(range(a + 1, a + K + 1))
    assert [p.loss for p in second] == [p.loss for p in first]
    for name in ("learning_rate", "grad_norm"):
        assert [p.scalars[name] for p in second] == [p.scalars[name] for p in first], name
    restored = got["restored"]
    assert restored.ok and restored.step == a, restored
    assert restored.restored == [
        "model weights",
        "optimizer",
        "LR scheduler",
        f"trainer state (global_step {a}, log history)",
        "RNG states",
    ]
    assert "lm_head.weight is tied to transformer.wte.weight (stored once)" in restored.notes
    assert "not restored: the data loader's position" in got["notice"].text
    assert not unchanged_weights(got["before"]) and unchanged_weights(got["after"])
