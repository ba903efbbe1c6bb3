"""Readers for every checkpoint kind the browser lists; none of them runs code from a file.

* torch files (``.pt``/``.pth``/``.bin``/``.ckpt``, including Lightning dicts and our own
  training states), :mod:`.torch_file`: ``torch.load(weights_only=True, mmap=True)``. With
  ``mmap`` the tensors' data stays on disk; reading shapes and dtypes touches only the pickle,
  so a 1 GB file's detail costs milliseconds.
* safetensors, :mod:`.safetensors_file`: the JSON header is parsed directly (8-byte length +
  JSON), with every offset checked against the file size; no tensor data is read.
* Hugging Face ``checkpoint-N/`` folders, :mod:`.hf`: ``trainer_state.json`` plus the model
  files above.
* torch.distributed.checkpoint folders, :mod:`.dcp`: torch reads their ``.metadata`` with plain
  ``pickle``, so they are *trusted-only*: listed as unsafe with that reason until the caller
  opts in with ``trust_dcp=True``.

The content decides the reader, not the extension (a safetensors file named ``.pt`` is read as
safetensors, and the info says so). Every failure is a :class:`CheckpointError` subclass with a
one-line message; :func:`read_info` and :func:`list_checkpoints` do not raise for bad files at
all, they return ``status="unreadable"`` or ``"unsafe"`` with a ``reason``.

Layout: :mod:`.base` holds the shared model (:class:`CheckpointInfo`, :class:`CheckpointDetail`,
the key tree, :func:`sniff`) and the :class:`~.base.Reader` interface; each format module
above holds one reader; this module dispatches over :data:`READERS` (the first whose
``matches`` is true reads the path) and re-exports the names other code imports. The format
modules import only :mod:`.base` and each other (HF reads its model files with the safetensors
and torch-file readers), never this module. To add a format, write one module with a
``Reader`` and add it to :data:`READERS`; its ``extensions`` join the folder listing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuidebug.ckpt.errors import CheckpointError, UnreadableCheckpoint, UnsafeCheckpoint
from tuidebug.ckpt.formats.base import (
    CheckpointDetail,
    CheckpointInfo,
    KeyNode,
    Reader,
    Status,
    TensorEntry,
    _base_info,
    _one_line,
    _stat_file,
    only_checkpoint_errors,
    sniff,
    tree_from_flat,
)
from tuidebug.ckpt.formats.dcp import DCP, DCP_REASON, is_dcp_folder
from tuidebug.ckpt.formats.hf import HF, HF_MODEL_PATTERNS, is_hf_folder
from tuidebug.ckpt.formats.safetensors_file import (
    SAFETENSORS,
    SAFETENSORS_EXTS,
    SafetensorsHeader,
    read_safetensors_header,
)
from tuidebug.ckpt.formats.torch_file import (
    TORCH,
    TORCH_EXTS,
    UNSAFE_REASON,
    load_unsafe,
    safe_torch_load,
    torch_object_format,
)

__all__ = [
    "CHECKPOINT_EXTS",
    "DCP_REASON",
    "HF_MODEL_PATTERNS",
    "READERS",
    "SAFETENSORS_EXTS",
    "TORCH_EXTS",
    "UNSAFE_REASON",
    "CheckpointDetail",
    "CheckpointInfo",
    "KeyNode",
    "Reader",
    "SafetensorsHeader",
    "Status",
    "TensorEntry",
    "detail",
    "is_dcp_folder",
    "is_hf_folder",
    "list_checkpoints",
    "load_unsafe",
    "model_state",
    "read_info",
    "read_safetensors_header",
    "safe_torch_load",
    "sniff",
    "torch_object_format",
    "tree_from_flat",
]

# The first reader that matches a path reads it. DCP comes before HF, so that a folder with a
# .metadata file is always trusted-only, whatever else it holds; the torch-file reader takes
# every file that is left, so it is last.
READERS: list[Reader] = [DCP, HF, SAFETENSORS, TORCH]
CHECKPOINT_EXTS: set[str] = set().union(*(r.extensions for r in READERS))


def _reader_for(p: Path, not_a_checkpoint: str) -> tuple[Reader, str]:
    """The reader of ``p`` and the kind it matched on ("folder", or what :func:`sniff` found)."""
    if p.is_dir():
        kind = "folder"
    else:
        _stat_file(p)
        kind = sniff(p)
    for reader in READERS:
        if reader.matches(p, kind):
            return reader, kind
    # the torch-file reader takes every file, so only a folder gets here
    raise UnreadableCheckpoint(f"{p.name}: {not_a_checkpoint}")


# --------------------------------------------------------------------------- info


def read_info(path: str | os.PathLike[str], *, trust_dcp: bool = False) -> CheckpointInfo:
    """Describe one file or folder. Never raises: problems become ``status`` and ``reason``."""
    p = Path(path)
    try:
        return _detail(p, trust_dcp=trust_dcp, want_tree=False).info
    except UnsafeCheckpoint as exc:
        info = _base_info(p, _guess_format(p), p.is_dir())
        info.status, info.reason = "unsafe", _strip_name(str(exc), p)
        return info
    except CheckpointError as exc:
        info = _base_info(p, _guess_format(p), p.is_dir())
        info.status, info.reason = "unreadable", _strip_name(str(exc), p)
        return info
    except Exception as exc:  # a reader bug must not take the console down
        info = _base_info(p, _guess_format(p), p.is_dir())
        info.status = "unreadable"
        info.reason = f"{type(exc).__name__}: {_one_line(exc)}"
        return info


def _strip_name(msg: str, p: Path) -> str:
    for prefix in (f"{p}: ", f"{p.name}: "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _guess_format(p: Path) -> str:
    is_dir = p.is_dir()
    for reader in READERS:
        fmt = reader.guess_format(p, is_dir)
        if fmt:
            return fmt
    return "unknown"


def detail(path: str | os.PathLike[str], *, trust_dcp: bool = False) -> CheckpointDetail:
    """The key tree with shapes, dtypes and sizes, and the parameter count, from metadata only.

    Raises :class:`UnsafeCheckpoint` or :class:`UnreadableCheckpoint` (one-line message).
    """
    p = Path(path)
    with only_checkpoint_errors(p):
        return _detail(p, trust_dcp=trust_dcp, want_tree=True)


def _detail(p: Path, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
    reader, kind = _reader_for(p, "folder is not a checkpoint (no model files)")
    return reader.detail(p, kind, trust_dcp=trust_dcp, want_tree=want_tree)


# --------------------------------------------------------------------------- listing


def list_checkpoints(
    folder: str | os.PathLike[str], *, trust_dcp: bool = False
) -> list[CheckpointInfo]:
    """Every checkpoint file and checkpoint folder directly inside ``folder``, by name.

    Temporary files of saves in progress, hidden files and ``manifest.json`` are skipped.
    Raises :class:`UnreadableCheckpoint` only when ``folder`` itself cannot be listed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UnreadableCheckpoint(f"{root}: no such folder")
    try:
        entries = sorted(root.iterdir(), key=lambda x: x.name)
    except OSError as exc:
        raise UnreadableCheckpoint(f"{root}: {_one_line(exc)}") from None
    out: list[CheckpointInfo] = []
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            is_ckpt = any(r.matches(e, "folder") for r in READERS)
            if is_ckpt or e.suffix.lower() in CHECKPOINT_EXTS:
                out.append(read_info(e, trust_dcp=trust_dcp))
        elif e.suffix.lower() in CHECKPOINT_EXTS:
            out.append(read_info(e))
    return out


# --------------------------------------------------------------------------- tensors for diff


def model_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model weights of a checkpoint as a flat ``{dotted key: tensor}`` dict (for diffs).

    Torch files are memory-mapped, so only the tensors a diff reads are paged in. Our training
    states give their model(s) (prefixed by model name when there are several), Lightning dicts
    their ``state_dict``, Hugging Face folders their model files.
    """
    p = Path(path)
    with only_checkpoint_errors(p):
        reader, kind = _reader_for(p, "folder is not a checkpoint")
        return reader.model_state(p, kind)
