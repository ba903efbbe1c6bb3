"""torch.distributed.checkpoint folders (a ``.metadata`` file beside the shards).

torch reads their ``.metadata`` with plain ``pickle``, so they are *trusted-only*: listed as
unsafe with :data:`DCP_REASON` until the caller opts in with ``trust_dcp=True``. Only the
metadata is read (shapes and dtypes); diffing them is not supported.
"""

from __future__ import annotations

import math
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

DCP_REASON = (
    "torch.distributed.checkpoint folder: torch reads its .metadata with pickle, "
    "so it is trusted-only; open it with trust_dcp=True (--trust-dcp) if you trust it"
)


def is_dcp_folder(p: Path) -> bool:
    """A torch.distributed.checkpoint folder (it has a ``.metadata`` file)."""
    return (p / ".metadata").is_file()


def _detail_dcp(p: Path, trust: bool) -> CheckpointDetail:
    if not trust:
        raise UnsafeCheckpoint(f"{p.name}: {DCP_REASON}")
    info = _base_info(p, "dcp", is_dir=True)
    info.reason = "trusted: .metadata read with pickle on request"
    try:
        from torch.distributed.checkpoint import FileSystemReader

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            md = FileSystemReader(str(p)).read_metadata()
    except Exception as exc:
        raise UnreadableCheckpoint(f"{p.name}: .metadata unreadable ({_one_line(exc)})") from None
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
    model = [e for e in tensors if e.key.startswith("model.")]
    detail_ = CheckpointDetail(
        info=info,
        root=tree_from_flat(tensors, p.name),
        tensors=tensors,
        param_count=sum(e.numel for e in (model or tensors)),
        tensor_bytes=sum(e.nbytes for e in tensors),
        notes=[f"{len(others)} non-tensor entries: {', '.join(others[:8])}"] if others else [],
    )
    for k in ("step", "global_step"):
        if k in others:
            detail_.notes.append(f"{k!r} is stored as a pickled object (not read)")
    return detail_


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
