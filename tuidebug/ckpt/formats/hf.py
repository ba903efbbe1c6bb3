"""Hugging Face ``checkpoint-N/`` folders: ``trainer_state.json`` plus the model files.

The model files (``model*.safetensors`` or ``pytorch_model*.bin``) are read by the safetensors
and torch-file readers; progress comes from ``trainer_state.json`` (``global_step``, ``epoch``,
the last logged ``loss``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuidebug.ckpt.errors import UnreadableCheckpoint
from tuidebug.ckpt.formats.base import (
    CheckpointDetail,
    KeyNode,
    TensorEntry,
    _base_info,
    _int,
    _num,
    _one_line,
    _stat_file,
    only_checkpoint_errors,
    sniff,
)
from tuidebug.ckpt.formats.safetensors_file import SAFETENSORS, _detail_safetensors
from tuidebug.ckpt.formats.torch_file import TORCH, _detail_torch

HF_MODEL_PATTERNS = (
    "model.safetensors",
    "model-*.safetensors",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model-*.bin",
    "adapter_model.bin",
)


def is_hf_folder(p: Path) -> bool:
    """A Hugging Face checkpoint folder: trainer_state.json or known model file names."""
    if (p / "trainer_state.json").is_file():
        return True
    return any(any(p.glob(pat)) for pat in HF_MODEL_PATTERNS)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableCheckpoint(f"{path.parent.name}/{path.name}: {_one_line(exc)}") from None


def _hf_model_files(p: Path) -> list[Path]:
    files: list[Path] = []
    for pat in HF_MODEL_PATTERNS:
        files += sorted(x for x in p.glob(pat) if x.is_file())
    st = [f for f in files if f.suffix == ".safetensors"]
    return st or files  # HF writes one or the other; prefer safetensors when both exist


def _detail_hf(p: Path) -> CheckpointDetail:
    info = _base_info(p, "hf", is_dir=True)
    ts_path = p / "trainer_state.json"
    if ts_path.is_file():
        ts = _read_json(ts_path)
        if isinstance(ts, Mapping):
            info.step = _int(ts.get("global_step"))
            ep = _num(ts.get("epoch"))
            info.epoch = int(ep) if ep is not None and ep == int(ep) else ep
            logs = ts.get("log_history")
            if isinstance(logs, list):
                for rec in reversed(logs):
                    if isinstance(rec, Mapping) and _num(rec.get("loss")) is not None:
                        info.loss = _num(rec.get("loss"))
                        break
    files = _hf_model_files(p)
    if not files:
        raise UnreadableCheckpoint(f"{p.name}: Hugging Face folder without model weights")
    root = KeyNode(p.name, "dict")
    tensors: list[TensorEntry] = []
    notes: list[str] = []
    for f in files:
        d = _detail_safetensors(f, "safetensors") if sniff(f) == "safetensors" else None
        if d is None:
            d = _detail_torch(f, sniff(f), True)
        tensors += d.tensors
        root.children.append(d.root)
    root.numel = sum(c.numel for c in root.children)
    root.nbytes = sum(c.nbytes for c in root.children)
    others = sorted(x.name for x in p.iterdir() if x.is_file() and x not in files)
    if others:
        notes.append("other files: " + ", ".join(others))
    return CheckpointDetail(
        info=info,
        root=root,
        tensors=tensors,
        param_count=sum(e.numel for e in tensors),
        tensor_bytes=sum(e.nbytes for e in tensors),
        notes=notes,
    )


def _hf_model_state(p: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _hf_model_files(p):
        with only_checkpoint_errors(f):  # errors name the file, as when it is given alone
            _stat_file(f)
            kind = sniff(f)
            out.update((SAFETENSORS if kind == "safetensors" else TORCH).model_state(f, kind))
    return out


class HfFolderReader:
    """Hugging Face checkpoint folders (see :func:`is_hf_folder`)."""

    extensions: frozenset[str] = frozenset()

    def matches(self, p: Path, kind: str) -> bool:
        return kind == "folder" and is_hf_folder(p)

    def guess_format(self, p: Path, is_dir: bool) -> str | None:
        return "hf" if is_dir and is_hf_folder(p) else None

    def detail(self, p: Path, kind: str, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
        return _detail_hf(p)

    def model_state(self, p: Path, kind: str) -> dict[str, Any]:
        return _hf_model_state(p)


HF = HfFolderReader()
