"""torch files (``.pt``/``.pth``/``.bin``/``.ckpt``...), Lightning dicts and our training states.

Loaded only with ``torch.load(weights_only=True, mmap=True)``: with ``mmap`` the tensors' data
stays on disk and reading shapes and dtypes touches only the pickle. There is no fallback to
full unpickling; a file that needs it is classified as unsafe (it imports globals) or unreadable
(corrupt) by decoding its opcodes with ``pickletools``, which never executes them. Lightning's
``.ckpt`` is this format with its own object layout (``state_dict``, ``global_step``), told
apart by :func:`torch_object_format`.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuidebug.ckpt.errors import CheckpointError, UnreadableCheckpoint, UnsafeCheckpoint
from tuidebug.ckpt.formats.base import (
    CheckpointDetail,
    TensorEntry,
    _base_info,
    _int,
    _num,
    _one_line,
    _stat_file,
    _tree_from_object,
    sniff,
)
from tuidebug.ckpt.formats.safetensors_file import _ext_note

TORCH_EXTS = {".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl", ".pickle"}
UNSAFE_REASON = "loading it would run code from the file"
_MAX_PICKLE_SCAN = 64 * 1024 * 1024


def _pickle_needs_code(data: bytes) -> bool | None:
    """True if ``data`` is well-formed pickle that imports globals (code could run on load).

    Parsed with ``pickletools.genops``, which only decodes opcodes and never executes them.
    None when the bytes are not a valid pickle stream.
    """
    stream = io.BytesIO(data)
    found = False
    parsed_any = False
    try:
        for _ in range(8):  # legacy torch files are several pickles back to back
            if stream.tell() >= len(data):
                break
            for op, _arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE"):
                    found = True
            parsed_any = True
            if found:
                break
    except Exception:
        return True if found else None
    return found if parsed_any else None


def _classify_unpickling(path: Path, kind: str, exc: BaseException) -> CheckpointError:
    """Turn a weights_only refusal into "unsafe" (needs code) or "unreadable" (corrupt)."""
    msg = str(exc)
    if "GLOBAL" in msg or "Unsupported global" in msg:
        return UnsafeCheckpoint(f"{path.name}: {UNSAFE_REASON}")
    data: bytes | None = None
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if names and zf.getinfo(names[0]).file_size <= _MAX_PICKLE_SCAN:
                    data = zf.read(names[0])
        elif path.stat().st_size <= _MAX_PICKLE_SCAN:
            data = path.read_bytes()
    except Exception:
        data = None
    if data is not None and _pickle_needs_code(data):
        return UnsafeCheckpoint(f"{path.name}: {UNSAFE_REASON}")
    detail = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    why = next((ln for ln in detail if "Unsupported" in ln or "truncated" in ln), "")
    return UnreadableCheckpoint(
        f"{path.name}: not a valid checkpoint pickle{' (' + why[:120] + ')' if why else ''}"
    )


def safe_torch_load(
    path: str | os.PathLike[str],
    *,
    mmap: bool = True,
    map_location: Any = "cpu",
    numpy_arrays: bool = False,
) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a CheckpointError.

    ``mmap`` is used for zip-format files (all torch >= 1.6 saves); legacy files are loaded
    without it. There is no fallback to full unpickling: a file that needs it raises
    :class:`UnsafeCheckpoint`. ``numpy_arrays`` also admits numpy's array and dtype
    constructors (what Hugging Face's ``rng_state.pth`` holds, numpy's generator state; the
    Trainer loads it with the same list): they build plain arrays and call nothing else.
    """
    import contextlib

    import torch

    p = Path(path)
    _stat_file(p)
    kind = sniff(p)
    if kind == "safetensors":
        raise UnreadableCheckpoint(f"{p.name}: safetensors content, not a torch file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            allowed = (
                torch.serialization.safe_globals(_numpy_array_globals())
                if numpy_arrays
                else contextlib.nullcontext()
            )
            with allowed:
                if p.name.lower().endswith(".safetensors"):
                    # torch.load hands "*.safetensors" paths to safetensors by name; this
                    # file's content is torch, so pass an open file (no mmap for this case)
                    with open(p, "rb") as f:
                        return torch.load(f, map_location=map_location, weights_only=True)
                return torch.load(
                    p, map_location=map_location, weights_only=True, mmap=mmap and kind == "zip"
                )
    except pickle.UnpicklingError as exc:
        raise _classify_unpickling(p, kind, exc) from None
    except MemoryError:
        raise UnreadableCheckpoint(f"{p.name}: too large to read (out of memory)") from None
    except RecursionError:
        raise UnreadableCheckpoint(f"{p.name}: nested too deeply to read") from None
    except Exception as exc:
        if kind not in ("zip", "pickle"):
            raise UnreadableCheckpoint(
                f"{p.name}: not a torch or safetensors file (unrecognised content)"
            ) from None
        raise UnreadableCheckpoint(f"{p.name}: corrupt or truncated ({_one_line(exc)})") from None


def _numpy_array_globals() -> list[Any]:
    """numpy's array reconstructor, array and dtype classes (empty without numpy)."""
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_unsafe(
    path: str | os.PathLike[str], *, i_accept_code_execution: bool, map_location: Any = "cpu"
) -> Any:
    """Fully unpickle a torch file. This can run arbitrary code from the file.

    Only for files the user trusts and has confirmed, naming that risk; refused (raises
    :class:`UnsafeCheckpoint`) unless ``i_accept_code_execution`` is True.
    """
    if i_accept_code_execution is not True:
        raise UnsafeCheckpoint(
            f"{Path(path).name}: refused: {UNSAFE_REASON}; pass i_accept_code_execution=True "
            "only for a file you trust"
        )
    import torch

    p = Path(path)
    _stat_file(p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise UnreadableCheckpoint(f"{p.name}: {type(exc).__name__}: {_one_line(exc)}") from exc


def torch_object_format(obj: Any) -> str:
    """Which convention a loaded torch object follows: tuidebug, lightning or plain torch."""
    from tuidebug.ckpt.own_format import FORMAT_NAME

    if isinstance(obj, Mapping):
        if obj.get("format") == FORMAT_NAME:
            return "tuidebug"
        if "pytorch-lightning_version" in obj or (
            isinstance(obj.get("state_dict"), Mapping) and "global_step" in obj
        ):
            return "lightning"
    return "torch"


def _progress_from_object(obj: Any, fmt: str) -> tuple[int | None, Any, float | None]:
    if not isinstance(obj, Mapping):
        return None, None, None
    if fmt == "tuidebug":
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping):
            meta = {}
        return _int(obj.get("step")), obj.get("epoch"), _num(meta.get("loss"))
    step = None
    for k in ("global_step", "step", "iteration", "iter"):
        step = _int(obj.get(k))
        if step is not None:
            break
    epoch_v = _num(obj.get("epoch"))
    epoch: int | float | None = epoch_v
    if epoch_v is not None and epoch_v == int(epoch_v):
        epoch = int(epoch_v)
    loss = None
    for k in ("loss", "train_loss", "val_loss", "best_loss"):
        loss = _num(obj.get(k))
        if loss is not None:
            break
    return step, epoch, loss


def _model_section(obj: Any, fmt: str) -> tuple[str, ...]:
    """Which top-level key holds the model weights (for the parameter count)."""
    if not isinstance(obj, Mapping):
        return ()
    if fmt == "tuidebug":
        return ("models",)
    for k in ("state_dict", "model_state_dict", "model", "module", "model_state"):
        if isinstance(obj.get(k), Mapping):
            return (k,)
    return ()


def _detail_torch(p: Path, kind: str, want_tree: bool) -> CheckpointDetail:
    obj = safe_torch_load(p, mmap=True)
    fmt = torch_object_format(obj)
    info = _base_info(p, fmt)
    info.reason = _ext_note(p, kind)
    info.step, info.epoch, info.loss = _progress_from_object(obj, fmt)
    tensors: list[TensorEntry] = []
    root = _tree_from_object(obj, p.name, "", tensors)
    section = _model_section(obj, fmt)
    if section:
        params = sum(e.numel for e in tensors if e.key.split(".", 1)[0] in section)
    else:
        params = sum(e.numel for e in tensors)
    metadata: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                metadata[str(k)] = v
        if fmt == "tuidebug" and isinstance(obj.get("metadata"), Mapping):
            metadata.update({f"metadata.{k}": v for k, v in obj["metadata"].items()})
    return CheckpointDetail(
        info=info,
        root=root,
        tensors=tensors,
        param_count=params,
        tensor_bytes=_unique_bytes(obj, tensors),
        metadata=metadata,
    )


def _unique_bytes(obj: Any, tensors: list[TensorEntry]) -> int:
    """Bytes of distinct storages (tied weights counted once); falls back to the tensor sum."""
    from tuidebug.ckpt.diff import flatten_tensors

    try:
        seen: dict[int, int] = {}
        for t in flatten_tensors(obj).values():
            s = t.untyped_storage()
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return sum(seen.values())
    except Exception:
        return sum(e.nbytes for e in tensors)


def _torch_model_state(p: Path) -> dict[str, Any]:
    from tuidebug.ckpt.diff import flatten_tensors

    obj = safe_torch_load(p, mmap=True)
    fmt = torch_object_format(obj)
    if fmt == "tuidebug":
        models = obj.get("models") or {}
        if len(models) == 1:
            return flatten_tensors(next(iter(models.values())))
        return flatten_tensors(models)
    section = _model_section(obj, fmt)
    return flatten_tensors(obj[section[0]] if section else obj)


class TorchFileReader:
    """Every file that is not safetensors: torch.load (weights only) names what it cannot read.

    It takes any file content, so it comes last in ``READERS``.
    """

    extensions = TORCH_EXTS

    def matches(self, p: Path, kind: str) -> bool:
        return kind != "folder"

    def guess_format(self, p: Path, is_dir: bool) -> str | None:
        if is_dir:
            return None
        ext = p.suffix.lower()
        if ext == ".ckpt":
            return "lightning"
        return "torch" if ext in TORCH_EXTS else None

    def detail(self, p: Path, kind: str, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
        return _detail_torch(p, kind, want_tree)

    def model_state(self, p: Path, kind: str) -> dict[str, Any]:
        return _torch_model_state(p)


TORCH = TorchFileReader()
