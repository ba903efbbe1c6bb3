"""Readers against files made by each format's own library, bad files, malicious pickles, fuzz."""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from ckpt_fixtures import (
    make_dcp_folder,
    make_hf_folder,
    make_lightning_file,
    make_malicious_files,
    make_safetensors_file,
    make_torch_file,
    small_model,
    trained,
)

from tuidebug.ckpt import (
    CheckpointError,
    UnreadableCheckpoint,
    UnsafeCheckpoint,
    atomic_save,
    capture_training_state,
    check_fits,
    detail,
    diff_state_dicts,
    list_checkpoints,
    load_training_state,
    load_unsafe,
    model_state,
    read_info,
)
from tuidebug.ckpt.cli import main as cli_main

N_PARAMS = 4 * 8 + 8 + 8 * 2 + 2


def test_torch_file(tmp_path: Path) -> None:
    info = read_info(make_torch_file(tmp_path / "a.pt"))
    assert (info.status, info.format, info.step, info.epoch, info.loss) == (
        "ok",
        "torch",
        7,
        1,
        0.25,
    )
    det = detail(tmp_path / "a.pt")
    assert det.param_count == N_PARAMS
    shapes = {t.key: (t.shape, t.dtype, t.nbytes) for t in det.tensors}
    assert shapes["model.0.weight"] == ((8, 4), "float32", 128)
    assert [n.name for n in det.root.children][:1] == ["model"]


def test_legacy_torch_file(tmp_path: Path) -> None:
    det = detail(make_torch_file(tmp_path / "old.pth", legacy=True))
    assert det.info.status == "ok" and det.param_count == N_PARAMS


def test_safetensors_file(tmp_path: Path) -> None:
    p = make_safetensors_file(tmp_path / "m.safetensors")
    info = read_info(p)
    assert (info.status, info.format, info.step, info.loss) == ("ok", "safetensors", 11, 0.5)
    det = detail(p)
    assert det.param_count == N_PARAMS
    assert {t.key for t in det.tensors} == set(small_model().state_dict())
    node = next(c for c in det.root.children if c.name == "0")
    assert {c.name for c in node.children} == {"weight", "bias"}
    assert len(model_state(p)) == 4


def test_lightning_file(tmp_path: Path) -> None:
    p = make_lightning_file(tmp_path / "epoch=3.ckpt")
    info = read_info(p)
    assert (info.status, info.format, info.step, info.epoch) == ("ok", "lightning", 120, 3)
    assert detail(p).param_count == N_PARAMS  # the optimizer state is not counted
    assert set(model_state(p)) == {f"model.{k}" for k in small_model().state_dict()}
    state = load_training_state(p)
    assert state["step"] == 120 and len(state["optimizers"]) == 1


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_hf_folder(tmp_path: Path, weights: str) -> None:
    p = make_hf_folder(tmp_path / "checkpoint-500", weights=weights)
    [info] = list_checkpoints(tmp_path)
    assert (info.status, info.format, info.is_dir) == ("ok", "hf", True)
    assert (info.step, info.epoch, info.loss) == (500, 1.5, 0.4)
    det = detail(p)
    assert det.param_count == N_PARAMS
    assert any("trainer_state.json" in n for n in det.notes)
    assert set(model_state(p)) == set(small_model().state_dict())


def test_dcp_folder_reads_without_trust(tmp_path: Path) -> None:
    # its .metadata holds only DCP's metadata classes (tests/unit/test_dcp_metadata.py)
    p = make_dcp_folder(tmp_path / "dcp")
    info = read_info(p)
    assert (info.status, info.format) == ("ok", "dcp")
    shown = detail(p)
    assert shown.param_count == N_PARAMS
    assert {t.key for t in shown.tensors} == {f"model.{k}" for k in small_model().state_dict()}
    [listed] = list_checkpoints(tmp_path)
    assert listed.status == "ok"
    assert detail(p, trust_dcp=True).param_count == N_PARAMS


def test_own_training_state(tmp_path: Path) -> None:
    model = small_model()
    opt = trained(model)
    state = capture_training_state(
        models={"net": model}, optimizers={"adam": opt}, step=42, epoch=2, metadata={"loss": 0.125}
    )
    assert atomic_save(state, tmp_path / "s.pt").ok
    info = read_info(tmp_path / "s.pt")
    assert (info.format, info.step, info.epoch, info.loss) == ("tuidebug", 42, 2, 0.125)
    det = detail(tmp_path / "s.pt")
    assert det.param_count == N_PARAMS
    assert det.metadata["metadata.loss"] == 0.125
    assert list_checkpoints(tmp_path)[0].name == "s.pt"  # manifest.json is not listed


def test_wrong_extension_is_read_by_content(tmp_path: Path) -> None:
    st = make_safetensors_file(tmp_path / "m.safetensors")
    shutil.copy(st, tmp_path / "looks_like.pt")
    tp = make_torch_file(tmp_path / "t.pt")
    shutil.copy(tp, tmp_path / "looks_like.safetensors")
    a, b = read_info(tmp_path / "looks_like.pt"), read_info(tmp_path / "looks_like.safetensors")
    assert (a.status, a.format) == ("ok", "safetensors") and ".pt extension" in a.reason
    assert (b.status, b.format) == ("ok", "torch") and "extension" in b.reason


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = make_torch_file(tmp_path / "good.pt").read_bytes()
    st = make_safetensors_file(tmp_path / "good.safetensors").read_bytes()
    files = {
        "empty": b"",
        "text": b"hello, this is not a checkpoint\n",
        "random": random.Random(0).randbytes(4096),
        "truncated_zip": good[: len(good) // 2],
        "truncated_st": st[: len(st) - 10],
        "st_header_only": st[:20],
        "one_byte": b"\x80",
    }
    out = {}
    for name, data in files.items():
        p = tmp_path / "bad" / f"{name}.pt"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        out[name] = p
    (tmp_path / "bad" / "truncated_st.safetensors").write_bytes(st[: len(st) - 10])
    (tmp_path / "bad" / "folder.pt").mkdir()
    return out


def test_bad_files_get_one_line_reasons(tmp_path: Path) -> None:
    _bad_files(tmp_path)
    infos = list_checkpoints(tmp_path / "bad")
    assert len(infos) == 9
    for info in infos:
        assert info.status == "unreadable", info
        assert info.reason and "\n" not in info.reason and len(info.reason) < 250
        with pytest.raises(UnreadableCheckpoint):
            detail(info.path)
    by_name = {i.name: i.reason for i in infos}
    assert "empty" in by_name["empty.pt"]
    assert "truncated" in by_name["truncated_zip.pt"]
    assert "truncated" in by_name["truncated_st.safetensors"]
    with pytest.raises(UnreadableCheckpoint, match="no such file"):
        detail(tmp_path / "missing.pt")
    with pytest.raises(UnreadableCheckpoint, match="no such folder"):
        list_checkpoints(tmp_path / "missing")


def test_malicious_pickles_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "PWNED"
    files = make_malicious_files(tmp_path / "ck", target)
    model = small_model()
    infos = {i.name: i for i in list_checkpoints(tmp_path / "ck")}
    assert len(infos) == len(files)
    for info in infos.values():
        assert info.status == "unsafe", info
    for f in files:
        assert read_info(f).status == "unsafe"
        with pytest.raises(UnsafeCheckpoint):
            detail(f)
        with pytest.raises(UnsafeCheckpoint):
            model_state(f) if not f.is_dir() or f.name != "evil_dcp" else detail(f)
        if f.is_file():
            with pytest.raises(UnsafeCheckpoint):
                load_training_state(f)
            with pytest.raises(UnsafeCheckpoint, match="refused"):
                load_unsafe(f, i_accept_code_execution=False)
        assert cli_main(["show", str(f)]) == 2
        assert cli_main(["diff", str(f), str(f)]) == 2
    assert cli_main(["ls", str(tmp_path / "ck")]) == 0
    assert "loading it would run code from the file" in capsys.readouterr().out
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    assert check_fits(load_training_state(good), {"m": model}).fits
    assert diff_state_dicts(model_state(good), model.state_dict()).fits
    assert not target.exists(), "a payload ran"
    # The explicit opt-in is the only path that runs it, which shows the payloads are live.
    load_unsafe(files[0], i_accept_code_execution=True)
    assert target.exists()


def _mutations(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(data[: rng.randrange(len(data))])
        else:
            b = bytearray(data)
            for _ in range(rng.choice((1, 1, 2, 8))):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out.append(bytes(b))
    return out


def test_fuzzed_files_raise_only_our_errors(tmp_path: Path) -> None:
    rng = random.Random(1234)
    target = tmp_path / "PWNED"
    sources = {
        "zip.pt": make_torch_file(tmp_path / "z.pt").read_bytes(),
        "legacy.pt": make_torch_file(tmp_path / "l.pt", legacy=True).read_bytes(),
        "st.safetensors": make_safetensors_file(tmp_path / "s.safetensors").read_bytes(),
        "evil.pt": (make_malicious_files(tmp_path / "evil", target)[0]).read_bytes(),
    }
    counts = {"ok": 0, "unsafe": 0, "unreadable": 0}
    path = tmp_path / "fuzz"
    path.mkdir()
    t0 = time.perf_counter()
    n = 0
    for name, data in sources.items():
        for i, blob in enumerate(_mutations(data, rng, 750)):
            p = path / f"{i}_{name}"
            p.write_bytes(blob)
            info = read_info(p)
            assert info.status in counts and "\n" not in info.reason
            counts[info.status] += 1
            with contextlib.suppress(CheckpointError):
                detail(p)
            p.unlink()
            n += 1
    elapsed = time.perf_counter() - t0
    print(f"{n} mutated files in {elapsed:.1f}s: {counts}")
    assert n == 3000
    assert counts["unreadable"] > 1000 and counts["ok"] > 0
    assert not target.exists()
