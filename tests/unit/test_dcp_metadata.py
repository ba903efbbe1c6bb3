"""torch.distributed.checkpoint folders are read without running code from them.

torch reads a ``.metadata`` with plain pickle and a "bytes" entry with
``torch.load(weights_only=False)``; ours goes through the restricted unpickler of
ckpt/formats/dcp.py (DCP's metadata classes only) and ckpt/sharded.py's SafeReader (no bytes
entry read). Each attack here creates a file when it runs; the tests show it never does, and
(through torch's own reader, or the explicit trust) that the payloads are live.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from ckpt_fixtures import Payload, make_dcp_folder, small_model
from torch.distributed.checkpoint.api import CheckpointException

from tuidebug.ckpt.errors import UnreadableCheckpoint, UnsafeCheckpoint
from tuidebug.ckpt.formats import detail, list_checkpoints, read_info
from tuidebug.ckpt.formats.dcp import read_dcp_metadata
from tuidebug.ckpt.sharded import SafeReader


def test_a_real_dcp_folder_passes_the_allowlist(tmp_path: Path) -> None:
    folder = make_dcp_folder(tmp_path / "dcp")
    md = read_dcp_metadata(folder)
    assert set(md.state_dict_metadata) == {f"model.{k}" for k in small_model().state_dict()}
    info = read_info(folder)
    assert (info.status, info.format, info.reason) == ("ok", "dcp", "")  # no --trust-dcp
    shown = detail(folder)
    assert shown.param_count == sum(p.numel() for p in small_model().parameters())


@pytest.mark.parametrize("how", ["system", "open", "eval"])
def test_a_payload_metadata_is_refused_and_never_runs(tmp_path: Path, how: str) -> None:
    target = tmp_path / "PWNED"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(target, how)))
    with pytest.raises(UnsafeCheckpoint, match=r"not a torch\.distributed\.checkpoint metadata"):
        read_dcp_metadata(folder)
    [row] = list_checkpoints(tmp_path)
    assert row.status == "unsafe" and "--trust-dcp" in row.reason
    with pytest.raises(UnsafeCheckpoint):
        detail(folder)
    assert not target.exists(), "a payload ran"
    with pytest.raises(UnreadableCheckpoint):  # the opt-in unpickles it (and it is no Metadata)
        detail(folder, trust_dcp=True)
    assert target.exists()


def test_a_payload_inside_real_metadata_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "PWNED"
    folder = make_dcp_folder(tmp_path / "dcp")
    md = read_dcp_metadata(folder)
    md.planner_data = {"model.0.weight": Payload(target)}
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(UnsafeCheckpoint, match=r"posix\.system"):
        read_dcp_metadata(folder)
    assert read_info(folder).status == "unsafe"
    assert not target.exists()


def test_dotted_names_of_allowed_classes_are_refused(tmp_path: Path) -> None:
    # protocol 4: STACK_GLOBAL("pathlib", "PosixPath.write_text"), then a call of it
    target = tmp_path / "PWNED"
    body = (
        b"\x80\x04\x8c\x07pathlib\x94\x8c\x14PosixPath.write_text\x94\x93\x94"
        + b"\x8c\x07pathlib\x94\x8c\tPosixPath\x94\x93\x94"
        + pickle.dumps(str(target), protocol=4)[2:-1]
        + b"\x85R\x8c\x01x\x86R."
    )
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / ".metadata").write_bytes(body)
    with pytest.raises(UnsafeCheckpoint, match=r"PosixPath\.write_text"):
        read_dcp_metadata(folder)
    assert not target.exists()


def test_shards_outside_the_folder_are_refused(tmp_path: Path) -> None:
    folder = make_dcp_folder(tmp_path / "dcp")
    md = read_dcp_metadata(folder)
    first = next(iter(md.storage_data))
    md.storage_data[first].relative_path = "../../etc/passwd"
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(UnreadableCheckpoint, match="outside its folder"):
        read_dcp_metadata(folder)


def test_bytes_entries_are_never_unpickled(tmp_path: Path) -> None:
    target = tmp_path / "PWNED"
    folder = tmp_path / "dcp"
    dcp.save({"t": torch.ones(3), "evil": Payload(target)}, checkpoint_id=str(folder))
    assert read_dcp_metadata(folder)  # the metadata itself only names a bytes entry
    with pytest.raises(CheckpointException, match="pickled object"):
        dcp.load({"t": torch.zeros(3), "evil": None}, storage_reader=SafeReader(str(folder)))
    assert not target.exists()
    loaded = {"t": torch.zeros(3)}  # the tensors beside it load (nothing asks for the entry)
    dcp.load(loaded, storage_reader=SafeReader(str(folder)))
    assert loaded["t"].tolist() == [1.0, 1.0, 1.0]
    # torch's own reader unpickles the entry: the payload is live
    dcp.load({"t": torch.zeros(3), "evil": None}, checkpoint_id=str(folder))
    assert target.exists()


def test_verify_and_prune_of_sharded_folders(tmp_path: Path) -> None:
    from tuidebug.ckpt.save import prune, record_in_manifest, sha256_file, verify

    for step in (1, 2):
        folder = make_dcp_folder(tmp_path / f"step-{step:08d}.dcp")
        (tmp_path / f"{folder.name}.ranks").mkdir()
        entry = {"file": folder.name, "sha256": sha256_file(folder / ".metadata"), "step": step}
        record_in_manifest(tmp_path, entry)
    assert [(r.file, r.ok) for r in verify(tmp_path)] == [
        ("step-00000001.dcp", True),
        ("step-00000002.dcp", True),
    ]
    shard = next((tmp_path / "step-00000002.dcp").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:10])
    bad = verify(tmp_path)[1]
    assert not bad.ok and "truncated" in bad.reason
    shard.unlink()
    assert "missing" in verify(tmp_path)[1].reason
    assert prune(tmp_path, keep=1) == ["step-00000001.dcp"]  # the folder and its ranks go
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "manifest.json",
        "step-00000002.dcp",
        "step-00000002.dcp.ranks",
    ]
