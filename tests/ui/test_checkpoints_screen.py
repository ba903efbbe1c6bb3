"""The checkpoint browser with Pilot: listing, detail, save, restore with confirmation, unsafe
files, refusals, diffs, and one snapshot.

The run is a ScriptedSource (no probe): the commands the screen sends are read back from it,
and the probe's answers are fed as messages. Files are real ones made with torch/safetensors.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from test_dashboard import ScriptedSource, run_info

from tuidebug.console.app import TuidebugApp
from tuidebug.console.run_model import RunModel
from tuidebug.console.screens.checkpoints import CheckpointsScreen, ConfirmScreen
from tuidebug.wire.checkpoint_messages import (
    CheckpointConfig,
    CheckpointDiff,
    CheckpointRestored,
    CheckpointSaved,
)
from tuidebug.wire.messages import Command, HistoryDone, Message, StepPoint, Steps

FIXED_TIME = 1_700_000_000


def safetensors_file(path: Path, step: int) -> None:
    """A tiny safetensors file written by hand (deterministic bytes, no library needed)."""
    header = {
        "__metadata__": {"step": str(step)},
        "fc.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "fc.bias": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]},
    }
    raw = json.dumps(header, sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(32))


def unsafe_file(path: Path) -> None:
    """A torch file whose pickle names a global the safe loader refuses (never loaded here)."""
    import torch

    torch.save({"weights": torch.zeros(2), "obj": shutil.disk_usage}, path)


def tuidebug_file(folder: Path, step: int) -> Path:
    import torch

    from tuidebug.ckpt import save_now

    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = save_now(folder, models={"model": model}, optimizers={"opt": opt}, step=step, epoch=0)
    assert result.ok, result.error
    return Path(result.path)


def make_folder(folder: Path, *, with_torch: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_file(folder / "weights.safetensors", 150)
    (folder / "empty.pt").write_bytes(b"")
    (folder / "truncated.pt").write_bytes(b"PK\x03\x04\x14\x00garbage")
    (folder / "random.bin").write_bytes(os.urandom(300))
    if with_torch:
        unsafe_file(folder / "pickled.pt")
        tuidebug_file(folder, 100)
        tuidebug_file(folder, 200)
    for p in folder.iterdir():
        os.utime(p, (FIXED_TIME, FIXED_TIME))
    return folder


def config(folder: Path) -> list[Message]:
    return [
        run_info(),
        CheckpointConfig(folder=str(folder), save_every=100, keep=3),
        HistoryDone(),
    ]


async def open_browser(app: TuidebugApp, pilot: Any) -> CheckpointsScreen:
    await pilot.pause(0.2)
    await pilot.press("c")
    await pilot.pause(0.5)
    screen = app.screen
    assert isinstance(screen, CheckpointsScreen)
    return screen


def detail(screen: CheckpointsScreen) -> str:
    return str(screen.query_one("#ckpt-detail").render())


def commands(source: ScriptedSource) -> list[Command]:
    return [m for m in source.sent if isinstance(m, Command)]


def test_listing_detail_save_and_restore(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ck")
    source = ScriptedSource([config(folder)])

    async def scenario() -> None:
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 36)) as pilot:
            screen = await open_browser(app, pilot)
            names = [i.name for i in screen.infos]
            assert "step-00000200.pt" in names and "empty.pt" in names
            status = {i.name: i.status for i in screen.infos}
            assert status["pickled.pt"] == "unsafe" and status["random.bin"] == "unreadable"
            # The newest step is highlighted; its detail: tree with shapes and the step.
            await pilot.pause(0.5)
            text = detail(screen)
            assert "step-00000200.pt" in text and "step 200" in text and "weight" in text
            assert "2×3 float32" in text

            await pilot.press("s")
            assert commands(source)[-1].name == "ckpt-save"
            # The probe answers: the file appears in the listing.
            saved = tuidebug_file(folder, 300)
            app.model.fold([CheckpointSaved(step=300, ok=True, path=str(saved))])
            await pilot.pause(0.6)
            assert "step-00000300.pt" in [i.name for i in screen.infos]

            await pilot.press("r")
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen)
            assert "step 300" in str(app.screen.body)
            await pilot.press("y")
            await pilot.pause(0.1)
            sent = commands(source)[-1]
            assert sent.name == "ckpt-restore" and sent.args["path"].endswith("step-00000300.pt")
            assert "unsafe" not in sent.args

            # "n" at the confirmation sends nothing.
            count = len(source.sent)
            await pilot.press("r")
            await pilot.pause(0.1)
            await pilot.press("n")
            await pilot.pause(0.1)
            assert len(source.sent) == count

    asyncio.run(scenario())


def test_unsafe_and_broken_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ck")
    source = ScriptedSource([config(folder)])

    async def scenario() -> None:
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 36)) as pilot:
            screen = await open_browser(app, pilot)
            table = screen.query_one("#ckpt-list")
            for name in ("empty.pt", "truncated.pt", "random.bin"):
                row = [i.name for i in screen.infos].index(name)
                table.move_cursor(row=row)  # type: ignore[attr-defined]
                await pilot.pause(0.3)
                assert "unreadable" in detail(screen)
                await pilot.press("r")  # no confirmation for a file that cannot be read
                await pilot.press("y")
                await pilot.pause(0.1)
                assert not any(c.name == "ckpt-restore" for c in commands(source))
                assert isinstance(app.screen, CheckpointsScreen)

            row = [i.name for i in screen.infos].index("pickled.pt")
            table.move_cursor(row=row)  # type: ignore[attr-defined]
            await pilot.pause(0.3)
            assert "unsafe" in detail(screen)
            await pilot.press("r")
            await pilot.pause(0.1)
            await pilot.press("y")  # the restore itself...
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen)
            assert "RUN CODE FROM THE FILE" in app.screen.body  # ...then the risk, by name
            await pilot.press("y")
            await pilot.pause(0.1)
            sent = commands(source)[-1]
            assert sent.name == "ckpt-restore" and sent.args.get("unsafe") == "1"

    asyncio.run(scenario())


def test_refusal_diff_vs_live_and_vs_marked(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ck")
    source = ScriptedSource([config(folder)])

    async def scenario() -> None:
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 36)) as pilot:
            screen = await open_browser(app, pilot)
            await pilot.press("f")
            sent = commands(source)[-1]
            assert sent.name == "ckpt-diff"
            app.model.fold(
                [
                    CheckpointDiff(
                        path=sent.args["path"],
                        changes=[("fc.weight", 0.25, 6), ("fc.bias", 0.01, 2)],
                        compared=2,
                    )
                ]
            )
            await pilot.pause(0.2)
            assert "fc.weight" in detail(screen) and "2.500e-01" in detail(screen)

            app.model.fold(
                [
                    CheckpointRestored(
                        ok=False,
                        path=str(folder / "step-00000100.pt"),
                        step=40,
                        from_step=40,
                        error="the checkpoint does not fit the live model; nothing was changed",
                        problems=["shape model.0.weight: [16, 4] saved, [8, 4] live"],
                    )
                ]
            )
            await pilot.pause(0.2)
            assert "shape model.0.weight" in detail(screen)

            names = [i.name for i in screen.infos]
            table = screen.query_one("#ckpt-list")
            table.move_cursor(row=names.index("step-00000100.pt"))  # type: ignore[attr-defined]
            await pilot.press("m")
            table.move_cursor(row=names.index("step-00000200.pt"))  # type: ignore[attr-defined]
            await pilot.pause(0.2)
            await pilot.press("x")
            await pilot.pause(1.0)
            text = detail(screen)
            assert "step-00000200.pt vs step-00000100.pt" in text and "weight" in text

            await pilot.press("o")
            await pilot.pause(0.1)
            await pilot.press(*"/nonexistent-folder", "enter")
            await pilot.pause(0.3)
            assert screen.infos == [] and screen.folder == "/nonexistent-folder"

    asyncio.run(scenario())


def test_restore_is_marked_on_the_loss_chart() -> None:
    model = RunModel()
    points = [StepPoint(s, float(s), 1.0 / s) for s in range(1, 51)]
    model.fold([Steps(points=points)])
    model.fold([CheckpointRestored(ok=True, path="/x/step-00000020.pt", step=20, from_step=50)])
    model.fold([Steps(points=[StepPoint(s, 60.0 + s, 0.5) for s in range(21, 31)])])
    (marker,) = model.loss.markers
    assert marker.step == 20 and marker.label == "restore"
    assert model.loss.rewinds == 1  # the marker and the new branch: one rewind, not two
    assert model.ext["checkpoints"].last_restore.step == 20


@pytest.mark.filterwarnings("ignore")
def test_browser_snapshot(snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "UTC")  # the time column is local time
    time.tzset()
    folder = Path("/tmp/tuidebug-ckpt-snapshot")
    shutil.rmtree(folder, ignore_errors=True)
    make_folder(folder, with_torch=False)  # deterministic bytes, sizes and times
    source = ScriptedSource([config(folder)], live=False)

    async def before(pilot: Any) -> None:
        await pilot.pause(0.2)
        await pilot.press("c")
        await pilot.pause(0.8)

    try:
        assert snap_compare(TuidebugApp(source=source), terminal_size=(100, 30), run_before=before)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_framework_folder_is_followed_and_restored_through_the_trainer(tmp_path: Path) -> None:
    """A Trainer run says, once its trainer starts, that its checkpoints are in output_dir:
    the browser lists that folder, and the confirmation says what goes back and what not."""
    run_folder = make_folder(tmp_path / "ck", with_torch=False)
    output_dir = tmp_path / "out"
    checkpoint = output_dir / "checkpoint-7"
    checkpoint.mkdir(parents=True)
    safetensors_file(checkpoint / "model.safetensors", 7)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 7, "epoch": 1.0}))
    source = ScriptedSource([config(run_folder)])

    async def scenario() -> None:
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 36)) as pilot:
            screen = await open_browser(app, pilot)
            assert screen.folder == str(run_folder)
            app.model.fold([CheckpointConfig(folder=str(output_dir), framework="transformers")])
            await pilot.pause(0.6)
            assert screen.folder == str(output_dir)
            assert [(i.name, i.format, i.step) for i in screen.infos] == [("checkpoint-7", "hf", 7)]
            title = str(screen.query_one("#ckpt-title").render())
            assert "the Trainer's checkpoints" in title
            await pilot.press("r")
            await pilot.pause(0.1)
            assert isinstance(app.screen, ConfirmScreen)
            body = str(app.screen.body)
            assert "through the Trainer" in body and "trainer_state.json" in body
            assert "Not restored: the data loader's position" in body
            await pilot.press("y")
            await pilot.pause(0.1)
            sent = commands(source)[-1]
            assert sent.name == "ckpt-restore" and sent.args == {"path": str(checkpoint)}
            app.model.fold(
                [
                    CheckpointRestored(
                        ok=True,
                        path=str(checkpoint),
                        step=7,
                        from_step=12,
                        restored=["model weights", "optimizer"],
                        notes=["not restored: the data loader's position"],
                    )
                ]
            )
            await pilot.pause(0.3)
            text = detail(screen)
            assert "now at step 7" in text and "restored: model weights, optimizer" in text
            assert "not restored: the data loader's position" in text
            # A folder the user opened is kept when the run's folder moves again.
            await pilot.press("o")
            await pilot.pause(0.1)
            await pilot.press(*str(run_folder), "enter")
            await pilot.pause(0.3)
            app.model.fold([CheckpointConfig(folder=str(tmp_path / "elsewhere"))])
            await pilot.pause(0.3)
            assert screen.folder == str(run_folder)

    asyncio.run(scenario())
