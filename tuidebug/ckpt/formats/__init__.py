"""Readers for every checkpoint kind the browser lists; none of them runs code from a file.

* torch files (``.pt``/``.pth``/``.bin``/``.ckpt``, including Lightning dicts and our own
  training states): ``torch.load(weights_only=True, mmap=True)``. With ``mmap`` the tensors'
  data stays on disk; reading shapes and dtypes touches only the pickle, so a 1 GB file's detail
  costs milliseconds.
* safetensors: the JSON header is parsed here directly (8-byte length + JSON), with every
  offset checked against the file size; no tensor data is read.
* Hugging Face ``checkpoint-N/`` folders: ``trainer_state.json`` plus the model files above.
* torch.distributed.checkpoint folders: torch reads their ``.metadata`` with plain ``pickle``,
  so they are *trusted-only*: listed as unsafe with that reason until the caller opts in with
  ``trust_dcp=True``.

The content decides the reader, not the extension (a safetensors file named ``.pt`` is read as
safetensors, and the info says so). Every failure is a :class:`CheckpointError` subclass with a
one-line message; :func:`read_info` and :func:`list_checkpoints` do not raise for bad files at
all, they return ``status="unreadable"`` or ``"unsafe"`` with a ``reason``.
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
    Status,
    TensorEntry,
    _base_info,
    _one_line,
    _stat_file,
    sniff,
    tree_from_flat,
)
from tuidebug.ckpt.formats.dcp import DCP_REASON, _detail_dcp, is_dcp_folder
from tuidebug.ckpt.formats.hf import HF_MODEL_PATTERNS, _detail_hf, _hf_model_files, is_hf_folder
from tuidebug.ckpt.formats.safetensors_file import (
    SAFETENSORS_EXTS,
    SafetensorsHeader,
    _detail_safetensors,
    _load_safetensors,
    read_safetensors_header,
)
from tuidebug.ckpt.formats.torch_file import (
    TORCH_EXTS,
    UNSAFE_REASON,
    _detail_torch,
    _model_section,
    load_unsafe,
    safe_torch_load,
    torch_object_format,
)

__all__ = [
    "CHECKPOINT_EXTS",
    "DCP_REASON",
    "HF_MODEL_PATTERNS",
    "SAFETENSORS_EXTS",
    "TORCH_EXTS",
    "UNSAFE_REASON",
    "CheckpointDetail",
    "CheckpointInfo",
    "KeyNode",
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

CHECKPOINT_EXTS = TORCH_EXTS | SAFETENSORS_EXTS


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
    if p.is_dir():
        if is_dcp_folder(p):
            return "dcp"
        return "hf" if is_hf_folder(p) else "unknown"
    ext = p.suffix.lower()
    if ext in SAFETENSORS_EXTS:
        return "safetensors"
    if ext == ".ckpt":
        return "lightning"
    return "torch" if ext in TORCH_EXTS else "unknown"


def detail(path: str | os.PathLike[str], *, trust_dcp: bool = False) -> CheckpointDetail:
    """The key tree with shapes, dtypes and sizes, and the parameter count, from metadata only.

    Raises :class:`UnsafeCheckpoint` or :class:`UnreadableCheckpoint` (one-line message).
    """
    p = Path(path)
    try:
        return _detail(p, trust_dcp=trust_dcp, want_tree=True)
    except CheckpointError:
        raise
    except Exception as exc:  # keep the documented contract: only our error types escape
        raise UnreadableCheckpoint(f"{p.name}: {type(exc).__name__}: {_one_line(exc)}") from None


def _detail(p: Path, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
    if p.is_dir():
        if is_dcp_folder(p):
            return _detail_dcp(p, trust_dcp)
        if is_hf_folder(p):
            return _detail_hf(p)
        raise UnreadableCheckpoint(f"{p.name}: folder is not a checkpoint (no model files)")
    _stat_file(p)
    kind = sniff(p)
    if kind == "safetensors":
        return _detail_safetensors(p, kind)
    return _detail_torch(p, kind, want_tree)


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
            if is_dcp_folder(e) or is_hf_folder(e) or e.suffix.lower() in CHECKPOINT_EXTS:
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
    from tuidebug.ckpt.diff import flatten_tensors

    p = Path(path)
    try:
        if p.is_dir():
            if is_dcp_folder(p):
                raise UnreadableCheckpoint(
                    f"{p.name}: diffing torch.distributed.checkpoint folders is not supported"
                )
            if not is_hf_folder(p):
                raise UnreadableCheckpoint(f"{p.name}: folder is not a checkpoint")
            out: dict[str, Any] = {}
            for f in _hf_model_files(p):
                out.update(model_state(f))
            return out
        _stat_file(p)
        if sniff(p) == "safetensors":
            return _load_safetensors(p)
        obj = safe_torch_load(p, mmap=True)
        fmt = torch_object_format(obj)
        if fmt == "tuidebug":
            models = obj.get("models") or {}
            if len(models) == 1:
                return flatten_tensors(next(iter(models.values())))
            return flatten_tensors(models)
        section = _model_section(obj, fmt)
        return flatten_tensors(obj[section[0]] if section else obj)
    except CheckpointError:
        raise
    except Exception as exc:
        raise UnreadableCheckpoint(f"{p.name}: {type(exc).__name__}: {_one_line(exc)}") from None
