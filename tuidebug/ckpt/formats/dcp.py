"""torch.distributed.checkpoint folders (a ``.metadata`` file beside the shards).

torch reads a ``.metadata`` with plain ``pickle`` (``FileSystemReader.read_metadata``), which
runs whatever the file names. Here it is read with :class:`MetadataUnpickler` instead: it
builds only the classes DCP's metadata is made of (``torch.distributed.checkpoint.metadata``'s
dataclasses, the file system writer's ``_StorageInfo``, ``torch.Size``, dtypes, layouts,
``pathlib`` paths) and refuses any other global with :class:`UnsafeCheckpoint`, before calling
it. A folder whose metadata passes is listed and shown like any safe checkpoint; one that needs
more is *trusted-only*: listed as unsafe with its reason until the caller opts in with
``trust_dcp=True`` (``--trust-dcp``), which reads it with plain pickle as torch does.

A sharded save of ours (ckpt/sharded.py) holds only tensors in DCP, read back with
``weights_only``; its step, metadata, schedulers and the optimizers' plain values are in
:data:`STATE_FILE` beside the shards (a ``weights_only`` torch file). DCP "bytes" entries
(pickled objects, other writers' optimizer options) are listed by name and never unpickled.
Diffing DCP folders is not supported.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

from tuidebug.ckpt.errors import UnreadableCheckpoint, UnsafeCheckpoint
from tuidebug.ckpt.formats.base import (
    CheckpointDetail,
    TensorEntry,
    _base_info,
    _one_line,
    tree_from_flat,
)

METADATA_FILE = ".metadata"
STATE_FILE = "training_state.pt"
"""Rank 0's part of a sharded save of ours: everything but the tensors in the shards."""

DCP_REASON = (
    "torch.distributed.checkpoint folder whose .metadata needs more than DCP's metadata "
    "classes; open it with trust_dcp=True (--trust-dcp) if you trust it"
)

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        (_DCP_METADATA, "Metadata"),
        (_DCP_METADATA, "MetadataIndex"),
        (_DCP_METADATA, "StorageMeta"),
        (_DCP_METADATA, "TensorProperties"),
        (_DCP_METADATA, "TensorStorageMetadata"),
        (_DCP_METADATA, "ChunkStorageMetadata"),
        (_DCP_METADATA, "BytesStorageMetadata"),
        (_DCP_METADATA, "_MEM_FORMAT_ENCODING"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),  # a name -> torch.strided etc., nothing else
        # StorageMeta.checkpoint_id: where it was written (a path object, never opened)
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib._local", "PosixPath"),
        ("pathlib._local", "PurePosixPath"),
    }
)


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP ``.metadata``: only the classes above, and torch's dtypes.

    Names are matched whole (``find_class`` would otherwise follow dotted names such as
    ``PosixPath.write_text``); persistent ids are refused by ``pickle`` itself (no
    ``persistent_load``). A refused global raises before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and "." not in name:
            import torch

            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype):
                return value
        raise UnsafeCheckpoint(
            f"its .metadata needs {module}.{name}, which is not a "
            "torch.distributed.checkpoint metadata class"
        )


def read_dcp_metadata(folder: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """The ``Metadata`` of a DCP folder, unpickled with :class:`MetadataUnpickler` (plain
    pickle, as torch does, only with ``trust``). Raises :class:`UnsafeCheckpoint` for a
    global outside the list, :class:`UnreadableCheckpoint` for anything else."""
    p = Path(folder)
    try:
        data = (p / METADATA_FILE).read_bytes()
    except OSError as exc:
        raise UnreadableCheckpoint(f"{p.name}: .metadata unreadable ({_one_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # plain pickle only on the user's explicit request (--trust-dcp)
            md = pickle.loads(data) if trust else MetadataUnpickler(io.BytesIO(data)).load()
    except UnsafeCheckpoint as exc:
        raise UnsafeCheckpoint(f"{p.name}: {exc}; {DCP_REASON}") from None
    except Exception as exc:
        raise UnreadableCheckpoint(f"{p.name}: .metadata unreadable ({_one_line(exc)})") from None
    problem = _shape_problem(md)
    if problem:
        raise UnreadableCheckpoint(f"{p.name}: .metadata {problem}")
    return md


def _shape_problem(md: Any) -> str:
    """What is wrong with an unpickled metadata's layout ("" when nothing): the allowed classes
    could still be put together oddly; shard paths must stay inside the folder, and no stream
    transform (an extension torch would look up by name) is accepted."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import Metadata

    if not isinstance(md, Metadata) or not isinstance(md.state_dict_metadata, dict):
        return "is not a torch.distributed.checkpoint Metadata"
    storage = md.storage_data
    if storage is None:
        return ""
    if not isinstance(storage, dict):
        return "has storage data of an unknown kind"
    for info in storage.values():
        if not isinstance(info, _StorageInfo):
            return "has storage data of an unknown kind"
        name = info.relative_path
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
            return f"names a shard outside its folder ({name!r})"
        if info.transform_descriptors:
            return f"asks for stream transforms {list(info.transform_descriptors)[:3]}"
    return ""


def shard_problems(folder: Path) -> str:
    """Whether every shard file the metadata names is there and long enough ("" when so)."""
    try:
        md = read_dcp_metadata(folder)
    except (UnreadableCheckpoint, UnsafeCheckpoint) as exc:
        return str(exc)
    ends: dict[str, int] = {}
    for info in (md.storage_data or {}).values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        try:
            size = (folder / name).stat().st_size
        except OSError:
            return f"shard {name} is missing"
        if size < end:
            return f"shard {name} is truncated ({size} bytes, {end} needed)"
    return ""


def is_dcp_folder(p: Path) -> bool:
    """A torch.distributed.checkpoint folder (it has a ``.metadata`` file)."""
    return (p / METADATA_FILE).is_file()


def _detail_dcp(p: Path, trust: bool) -> CheckpointDetail:
    try:
        md = read_dcp_metadata(p)
        trusted = False
    except UnsafeCheckpoint:
        if not trust:
            raise
        md = read_dcp_metadata(p, trust=True)
        trusted = True
    info = _base_info(p, "dcp", is_dir=True)
    if trusted:
        info.reason = "trusted: .metadata read with pickle on request"
    from tuidebug.ckpt.diff import dtype_name

    tensors: list[TensorEntry] = []
    others: list[str] = []
    for key, m in md.state_dict_metadata.items():
        props = getattr(m, "properties", None)
        size = getattr(m, "size", None)
        if props is None or size is None:
            others.append(key)
            continue
        shape = tuple(int(s) for s in size)
        numel = math.prod(shape)
        dt = props.dtype
        item = dt.itemsize if hasattr(dt, "itemsize") else 0
        tensors.append(TensorEntry(key, shape, dtype_name(dt), numel, numel * item))
    model = [e for e in tensors if e.key.startswith(("model.", "models."))]
    detail_ = CheckpointDetail(
        info=info,
        root=tree_from_flat(tensors, p.name),
        tensors=tensors,
        param_count=sum(e.numel for e in (model or tensors)),
        tensor_bytes=sum(e.nbytes for e in tensors),
        notes=[f"{len(others)} non-tensor entries (not read): {', '.join(others[:8])}"]
        if others
        else [],
    )
    _read_state_file(p, detail_)
    for k in ("step", "global_step"):
        if k in others and detail_.info.step is None:
            detail_.notes.append(f"{k!r} is stored as a pickled object (not read)")
    return detail_


def _read_state_file(p: Path, detail_: CheckpointDetail) -> None:
    """A sharded save of ours: step, epoch, loss and metadata from its :data:`STATE_FILE`."""
    state_file = p / STATE_FILE
    if not state_file.is_file():
        return
    from tuidebug.ckpt.formats.base import _int, _num
    from tuidebug.ckpt.formats.torch_file import safe_torch_load

    try:
        state = safe_torch_load(state_file, mmap=False)
    except (UnreadableCheckpoint, UnsafeCheckpoint) as exc:
        detail_.notes.append(f"{STATE_FILE}: {exc}")
        return
    if not isinstance(state, dict):
        return
    info = detail_.info
    found = state.get("metadata")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    info.step, info.epoch = _int(state.get("step")), _int(state.get("epoch"))
    info.loss = _num(meta.get("loss"))
    for k, v in state.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            detail_.metadata[str(k)] = v
    detail_.metadata.update({f"metadata.{k}": v for k, v in meta.items()})


class DcpFolderReader:
    """torch.distributed.checkpoint folders (see :func:`is_dcp_folder`)."""

    extensions: frozenset[str] = frozenset()

    def matches(self, p: Path, kind: str) -> bool:
        return kind == "folder" and is_dcp_folder(p)

    def guess_format(self, p: Path, is_dir: bool) -> str | None:
        return "dcp" if is_dir and is_dcp_folder(p) else None

    def detail(self, p: Path, kind: str, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
        return _detail_dcp(p, trust_dcp)

    def model_state(self, p: Path, kind: str) -> dict[str, Any]:
        raise UnreadableCheckpoint(
            f"{p.name}: diffing torch.distributed.checkpoint folders is not supported"
        )


DCP = DcpFolderReader()
