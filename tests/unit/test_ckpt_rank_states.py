"""A torchrun job's checkpoint: the model once, each rank's generators in ``FILE.ranks/``.

The files are written by the same call the probe's rank_rng extension makes on each rank
(``save_rank_state``); ``tests/distributed/test_torchrun.py`` covers the live two-rank job. Here:
what ``tuidebug ckpt ls/show`` make of them, and that pruning takes them with their checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ckpt_fixtures import small_model, trained

from tuidebug.ckpt.cli import main
from tuidebug.ckpt.rng import rank_state_files, rank_states_folder, read_rank_state
from tuidebug.ckpt.save import save_now, save_rank_state


def _job_checkpoint(folder: Path, step: int, world_size: int = 2) -> Path:
    model = small_model()
    optimizer = trained(model)
    result = save_now(folder, models={"m": model}, optimizers={"o": optimizer}, step=step, epoch=0)
    assert result.ok, result.error
    for rank in range(world_size):
        written = save_rank_state(result.path, rank=rank, world_size=world_size, step=step)
        assert written.ok, written.error
    return Path(result.path)


def test_rank_files_round_trip_the_generators(tmp_path: Path) -> None:
    torch.manual_seed(3)
    checkpoint = _job_checkpoint(tmp_path, step=7)
    expected = torch.rand(3)  # the next draw after the states were taken
    files = rank_state_files(checkpoint)
    assert list(files) == [0, 1]
    state = read_rank_state(files[1])
    assert (state["rank"], state["world_size"], state["step"]) == (1, 2, 7)
    torch.set_rng_state(state["rng"]["torch"])
    assert torch.equal(torch.rand(3), expected)


def test_ls_and_show_report_the_rank_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _job_checkpoint(tmp_path, step=12)
    assert main(["ls", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # the .ranks folder is part of its checkpoint, not a row of its own
    assert [(r["name"], r["ranks"]) for r in rows] == [(checkpoint.name, 2)]

    assert main(["ls", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ranks" in out and f"{checkpoint.name}.ranks" not in out

    rank_state_files(checkpoint)[1].write_bytes(b"not a torch file")  # one bad file
    assert main(["show", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert f"2 files in {checkpoint.name}.ranks/" in out
    assert "rank 0: step 12, world size 2" in out
    assert "rank 1: unreadable" in out


def test_a_one_process_checkpoint_has_no_rank_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = small_model()
    assert save_now(tmp_path, models={"m": model}, optimizers={}, step=1, epoch=0).ok
    assert main(["ls", str(tmp_path)]) == 0
    assert "ranks" not in capsys.readouterr().out


def test_pruning_removes_a_checkpoints_rank_files_with_it(tmp_path: Path) -> None:
    old = _job_checkpoint(tmp_path, step=1)
    model = small_model()
    result = save_now(
        tmp_path, models={"m": model}, optimizers={"o": trained(model)}, step=2, epoch=0, keep=1
    )
    assert result.ok and old.name in result.removed
    assert not old.exists() and not rank_states_folder(old).exists()
