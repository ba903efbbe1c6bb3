"""safetensors files: the JSON header is parsed here directly (8-byte length + JSON).

Every offset is checked against the file size and no tensor data is read for the detail; the
weights for a diff are loaded with the ``safetensors`` package only after the header passed.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuidebug.ckpt.errors import UnreadableCheckpoint
from tuidebug.ckpt.formats.base import (
    CheckpointDetail,
    TensorEntry,
    _base_info,
    _int,
    _num,
    _one_line,
    _stat_file,
    tree_from_flat,
)

SAFETENSORS_EXTS = {".safetensors"}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_ST_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
    "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "C64": 8, "C128": 16,
}  # fmt: skip
_ST_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32",
    "U16": "uint16", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "C64": "complex64",
    "C128": "complex128",
}  # fmt: skip


@dataclass
class SafetensorsHeader:
    """A validated safetensors header: tensors by name and the free-form metadata."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate a safetensors header without reading tensor data."""
    p = Path(path)
    st = _stat_file(p)
    size = st.st_size
    if size < 8:
        raise UnreadableCheckpoint(f"{p.name}: too short for safetensors ({size} bytes)")
    try:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n < 2 or n > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise UnreadableCheckpoint(
                    f"{p.name}: safetensors header length {n} does not fit the file "
                    f"({size} bytes); truncated or not safetensors"
                )
            raw = f.read(n)
    except OSError as exc:
        raise UnreadableCheckpoint(f"{p.name}: {_one_line(exc)}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UnreadableCheckpoint(f"{p.name}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise UnreadableCheckpoint(f"{p.name}: safetensors header is not a JSON object")
    data_len = size - 8 - n
    meta_raw = header.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in meta_raw.items()} if isinstance(meta_raw, dict) else {}
    tensors: dict[str, TensorEntry] = {}
    for key, entry in header.items():
        bad = UnreadableCheckpoint(f"{p.name}: malformed safetensors entry {str(key)[:60]!r}")
        if not isinstance(entry, dict):
            raise bad
        dt, shape, offs = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dt, str) or not isinstance(shape, list) or not isinstance(offs, list):
            raise bad
        if len(offs) != 2 or not all(type(o) is int for o in offs):
            raise bad
        if not all(type(s) is int and s >= 0 for s in shape):
            raise bad
        start, end = offs
        if not 0 <= start <= end <= data_len:
            raise UnreadableCheckpoint(
                f"{p.name}: tensor {str(key)[:60]!r} lies beyond the end of the file (truncated)"
            )
        numel = math.prod(shape)
        item = _ST_DTYPE_SIZES.get(dt)
        if item is not None and numel * item != end - start:
            raise bad
        tensors[key] = TensorEntry(
            key, tuple(shape), _ST_DTYPE_NAMES.get(dt, dt.lower()), numel, end - start
        )
    return SafetensorsHeader(tensors, metadata, 8 + n)


def _ext_note(p: Path, kind: str) -> str:
    ext = p.suffix.lower()
    if kind == "safetensors" and ext not in SAFETENSORS_EXTS:
        return f"safetensors content with a {ext or 'missing'} extension"
    if kind in ("zip", "pickle") and ext in SAFETENSORS_EXTS:
        return "torch content with a .safetensors extension"
    return ""


def _detail_safetensors(p: Path, kind: str) -> CheckpointDetail:
    hdr = read_safetensors_header(p)
    info = _base_info(p, "safetensors")
    info.reason = _ext_note(p, kind)
    info.step = _int(_maybe_float(hdr.metadata.get("step") or hdr.metadata.get("global_step")))
    info.epoch = _num(_maybe_float(hdr.metadata.get("epoch")))
    info.loss = _num(_maybe_float(hdr.metadata.get("loss")))
    entries = list(hdr.tensors.values())
    return CheckpointDetail(
        info=info,
        root=tree_from_flat(entries, p.name),
        tensors=entries,
        param_count=sum(e.numel for e in entries),
        tensor_bytes=sum(e.nbytes for e in entries),
        metadata=dict(hdr.metadata),
    )


def _maybe_float(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _load_safetensors(p: Path) -> dict[str, Any]:
    read_safetensors_header(p)  # validates offsets first: the loader never sees a bad header
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UnreadableCheckpoint(f"{p.name}: the safetensors package is not installed") from None
    try:
        return dict(load_file(str(p), device="cpu"))
    except Exception as exc:
        raise UnreadableCheckpoint(f"{p.name}: {_one_line(exc)}") from None


class SafetensorsReader:
    """Files whose content is safetensors, whatever their extension."""

    extensions = SAFETENSORS_EXTS

    def matches(self, p: Path, kind: str) -> bool:
        return kind == "safetensors"

    def guess_format(self, p: Path, is_dir: bool) -> str | None:
        return "safetensors" if not is_dir and p.suffix.lower() in SAFETENSORS_EXTS else None

    def detail(self, p: Path, kind: str, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
        return _detail_safetensors(p, kind)

    def model_state(self, p: Path, kind: str) -> dict[str, Any]:
        return _load_safetensors(p)


SAFETENSORS = SafetensorsReader()
