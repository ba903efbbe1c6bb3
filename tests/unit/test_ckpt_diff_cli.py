"""State-dict diff, the ``tuidebug ckpt`` commands, and the import rules of the package."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ckpt_fixtures import ROOT, make_hf_folder, make_safetensors_file, small_model, trained

from tuidebug.ckpt import diff_state_dicts, save_now
from tuidebug.ckpt.cli import add_parser, main


def test_diff_reports_keys_shapes_dtypes_and_sorted_changes() -> None:
    b = {"w": torch.ones(4), "v": torch.ones(2, 2), "z": torch.zeros(3), "gone": torch.ones(1)}
    a = {
        "w": torch.full((4,), 1.5),  # rel change 0.5
        "v": torch.ones(2, 2) * 1.01,  # 0.01
        "z": torch.ones(3),  # reference is zero: inf
        "new": torch.ones(1),
    }
    d = diff_state_dicts(a, b)
    assert d.missing == ["gone"] and d.unexpected == ["new"] and not d.fits
    assert [c.key for c in d.changes] == ["z", "w", "v"]
    assert math.isinf(d.changes[0].rel_change)
    assert d.changes[1].rel_change == pytest.approx(0.5)
    assert d.changes[2].rel_change == pytest.approx(0.01, rel=1e-5)
    d = diff_state_dicts(
        {"w": torch.ones(2, 3), "h": torch.ones(2)},
        {"w": torch.ones(3, 2), "h": torch.ones(2, dtype=torch.float16)},
    )
    assert [m.key for m in d.shape_mismatches] == ["w"]
    assert [(m.key, m.a_dtype, m.b_dtype) for m in d.dtype_mismatches] == [
        ("h", "float32", "float16")
    ]
    assert d.changes[0].rel_change == 0.0  # compared across dtypes in float64
    nested = diff_state_dicts({"m": {"a": torch.ones(1)}}, {"m.a": torch.ones(1)})
    assert nested.fits and nested.compared == 1


def _ckpts(tmp_path: Path) -> tuple[Path, Path]:
    model = small_model()
    opt = trained(model)
    a = save_now(tmp_path, models={"m": model}, optimizers={"o": opt}, step=1, epoch=0).path
    opt.step()  # same keys, different values
    with torch.no_grad():
        model[0].weight.mul_(2)
    b = save_now(tmp_path, models={"m": model}, optimizers={"o": opt}, step=2, epoch=0).path
    return Path(a), Path(b)


def test_cli_ls_show_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _ckpts(tmp_path)
    make_safetensors_file(tmp_path / "other.safetensors")
    make_hf_folder(tmp_path / "checkpoint-500")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    assert main(["ls", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("step-00000001.pt", "other.safetensors", "checkpoint-500", "broken.pt"):
        assert name in out
    assert "unreadable" in out

    assert main(["ls", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["status"] for r in rows}["broken.pt"] == "unreadable"

    assert main(["show", str(a)]) == 0
    out = capsys.readouterr().out
    assert "0.weight" in out and "[8, 4]" in out and "float32" in out and "parameters" in out
    assert main(["show", str(tmp_path / "checkpoint-500"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["param_count"] == 58

    assert main(["diff", str(b), str(a)]) == 0  # same keys and shapes: fits
    out = capsys.readouterr().out
    assert "fits" in out and out.index("0.weight") < out.index("2.bias")
    assert main(["diff", str(a), str(tmp_path / "other.safetensors"), "--json"]) == 0
    torch.save(small_model(out=3).state_dict(), tmp_path / "wide.pt")
    assert main(["diff", str(a), str(tmp_path / "wide.pt")]) == 1
    assert "shape" in capsys.readouterr().out

    assert main(["verify", str(tmp_path)]) == 0
    capsys.readouterr()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    for argv in (
        ["show", str(tmp_path / "missing.pt")],
        ["show", str(tmp_path / "empty.pt")],
        ["ls", str(tmp_path / "nope")],
        ["diff", str(tmp_path / "empty.pt"), "x.pt"],
        ["verify", str(tmp_path)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_add_parser_mounts_on_a_main_cli() -> None:
    parser = argparse.ArgumentParser(prog="tuidebug")
    subs = parser.add_subparsers()
    add_parser(subs)
    args = parser.parse_args(["ckpt", "diff", "a.pt", "b.pt", "--top", "5"])
    assert callable(args.func) and args.top == 5
    assert parser.parse_args(["ckpt"]).func(argparse.Namespace()) == 2


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("tuidebug.ckpt", ("rich", "textual", "torch")),
        ("tuidebug.ckpt.formats", ("rich", "textual", "torch")),
        ("tuidebug.ckpt.save", ("rich", "textual", "torch")),
        ("tuidebug.ckpt.restore", ("rich", "textual", "torch")),
        ("tuidebug.ckpt.cli", ("textual", "torch")),
    ],
)
def test_import_rules(module: str, forbidden: tuple[str, ...]) -> None:
    """The probe side imports neither Rich nor Textual; nothing here imports torch up front."""
    code = f"import sys, {module}; print([m for m in {forbidden!r} if m in sys.modules])"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
