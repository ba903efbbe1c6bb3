"""The shared model of every checkpoint reader: rows, tensors, key trees and common checks.

Nothing here knows a format. :class:`Reader` is the interface each format module implements;
:class:`CheckpointInfo` is one row of the browser, :class:`CheckpointDetail` its detail view (a
:class:`KeyNode` tree of :class:`TensorEntry` leaves); :func:`sniff` names the container from
the first bytes, :func:`_stat_file` turns a missing, empty or odd path into
:class:`UnreadableCheckpoint` with a one-line message.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tuidebug.ckpt.errors import CheckpointError, UnreadableCheckpoint
from tuidebug.ckpt.rng import rank_state_files

# --------------------------------------------------------------------------- data types

Status = Literal["ok", "unsafe", "unreadable"]


@dataclass
class CheckpointInfo:
    """One row of the browser: what a file or folder is, and whether it can be read safely.

    ``format``: "tuidebug", "torch", "lightning", "safetensors", "hf", "dcp" or "unknown".
    ``reason`` is one line: why it is unsafe/unreadable, or a note such as a wrong extension.
    """

    path: str
    name: str
    format: str
    size: int
    mtime: float
    is_dir: bool = False
    step: int | None = None
    epoch: int | float | None = None
    loss: float | None = None
    status: Status = "ok"
    reason: str = ""
    ranks: int = 0  # files of per-rank generators beside it (a torchrun job's: CKPT.ranks/)


@dataclass
class TensorEntry:
    """A tensor described from metadata only."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    nbytes: int


@dataclass
class KeyNode:
    """A node of the key tree: a container (children), a tensor, or a short scalar value."""

    name: str
    kind: Literal["dict", "list", "tensor", "value"]
    children: list[KeyNode] = field(default_factory=list)
    tensor: TensorEntry | None = None
    value: str | None = None
    numel: int = 0
    nbytes: int = 0

    def walk(self, depth: int = 0) -> Any:
        """Yield ``(depth, node)`` in display order."""
        yield depth, self
        for c in self.children:
            yield from c.walk(depth + 1)


@dataclass
class CheckpointDetail:
    """The detail view: the key tree, a flat tensor list and totals."""

    info: CheckpointInfo
    root: KeyNode
    tensors: list[TensorEntry]
    param_count: int
    tensor_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reader interface


class Reader(Protocol):
    """One checkpoint format, as the dispatcher in ``formats/__init__.py`` uses it.

    ``kind`` is "folder" for a directory, else what :func:`sniff` found in the file's first
    bytes (the file has passed :func:`_stat_file`). The first reader of ``READERS`` whose
    :meth:`matches` is true reads the path; a row's info is ``detail(want_tree=False).info``.
    Readers raise only :class:`CheckpointError` subclasses for bad files, with one-line
    messages; the dispatcher turns anything else into :class:`UnreadableCheckpoint`.
    """

    @property
    def extensions(self) -> Set[str]:
        """File suffixes (lower case) that make ``list_checkpoints`` offer a file to the readers."""

    def matches(self, p: Path, kind: str) -> bool:
        """Whether this reader reads ``p``: decided by content, not by name."""

    def guess_format(self, p: Path, is_dir: bool) -> str | None:
        """The format by name alone, for the row of a path that could not be read; else None."""

    def detail(self, p: Path, kind: str, *, trust_dcp: bool, want_tree: bool) -> CheckpointDetail:
        """The key tree, tensor list and totals, from metadata only."""

    def model_state(self, p: Path, kind: str) -> dict[str, Any]:
        """The model weights as a flat ``{dotted key: tensor}`` dict (for diffs)."""


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    cut = text.find(". ")
    if cut > 0:
        text = text[:cut]
    return text[:limit]


@contextlib.contextmanager
def only_checkpoint_errors(p: Path) -> Iterator[None]:
    """Keep the documented contract: only our error types escape, a reader bug as one line."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:
        raise UnreadableCheckpoint(f"{p.name}: {type(exc).__name__}: {_one_line(exc)}") from None


def _stat_file(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UnreadableCheckpoint(f"{path}: no such file") from None
    except OSError as exc:
        raise UnreadableCheckpoint(f"{path}: {_one_line(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableCheckpoint(f"{path}: is a folder, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableCheckpoint(f"{path}: not a regular file")
    if st.st_size == 0:
        raise UnreadableCheckpoint(f"{path.name}: empty file (0 bytes)")
    return st


def sniff(path: str | os.PathLike[str]) -> str:
    """Guess the container from the first bytes: "zip", "pickle", "safetensors", "empty"...

    torch >= 1.6 writes zip archives; older torch and plain ``pickle.dump`` write a pickle
    stream (first byte 0x80); safetensors starts with an 8-byte header length followed by "{".
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise UnreadableCheckpoint(f"{path}: {_one_line(exc)}") from None
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]", b"c"):
        return "pickle"
    return "unknown"


# --------------------------------------------------------------------------- trees


def _tensor_entry(key: str, t: Any) -> TensorEntry:
    from tuidebug.ckpt.diff import dtype_name

    numel = int(t.numel())
    return TensorEntry(key, tuple(int(s) for s in t.shape), dtype_name(t.dtype), numel,
                       numel * int(t.element_size()))  # fmt: skip


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _tree_from_object(
    obj: Any, name: str, prefix: str, out: list[TensorEntry], depth: int = 0
) -> KeyNode:
    import torch

    if isinstance(obj, torch.Tensor):
        entry = _tensor_entry(prefix or name, obj)
        out.append(entry)
        return KeyNode(name, "tensor", tensor=entry, numel=entry.numel, nbytes=entry.nbytes)
    if depth > 64:
        return KeyNode(name, "value", value="<nested too deeply>")
    if isinstance(obj, Mapping):
        node = KeyNode(name, "dict")
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)) and any(
        isinstance(v, (torch.Tensor, Mapping, list, tuple)) for v in obj
    ):
        node = KeyNode(name, "list")
        items = [(str(i), v) for i, v in enumerate(obj)]
    else:
        return KeyNode(name, "value", value=_short(obj))
    for k, v in items:
        child = _tree_from_object(v, k, f"{prefix}.{k}" if prefix else k, out, depth + 1)
        node.children.append(child)
        node.numel += child.numel
        node.nbytes += child.nbytes
    return node


def tree_from_flat(entries: list[TensorEntry], name: str = "") -> KeyNode:
    """Build a key tree from dotted names ("layer.0.weight"), as safetensors stores them."""
    root = KeyNode(name, "dict")
    index: dict[tuple[str, ...], KeyNode] = {(): root}
    for e in entries:
        parts = e.key.split(".")
        node = root
        for i in range(1, len(parts)):
            path = tuple(parts[:i])
            nxt = index.get(path)
            if nxt is None or nxt.kind == "tensor":
                nxt = KeyNode(parts[i - 1], "dict")
                node.children.append(nxt)
                index[path] = nxt
            node = nxt
        leaf = KeyNode(parts[-1], "tensor", tensor=e, numel=e.numel, nbytes=e.nbytes)
        node.children.append(leaf)
        index.setdefault(tuple(parts), leaf)
    _sum_tree(root)
    return root


def _sum_tree(node: KeyNode) -> None:
    if node.kind == "tensor":
        return
    node.numel = node.nbytes = 0
    for c in node.children:
        _sum_tree(c)
        node.numel += c.numel
        node.nbytes += c.nbytes


# --------------------------------------------------------------------------- values and rows


def _num(x: Any) -> float | None:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            if x.numel() != 1:
                return None
            x = x.item()
    except Exception:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _int(x: Any) -> int | None:
    v = _num(x)
    return int(v) if v is not None and v == int(v) else None


def _base_info(p: Path, fmt: str, is_dir: bool = False) -> CheckpointInfo:
    try:
        st = p.stat()
        size, mtime = st.st_size, st.st_mtime
    except OSError:
        size, mtime = 0, 0.0
    if is_dir:
        size = _folder_size(p)
    ranks = len(rank_state_files(p))
    return CheckpointInfo(str(p), p.name, fmt, size, mtime, is_dir=is_dir, ranks=ranks)


def _folder_size(p: Path) -> int:
    total = 0
    try:
        for dirpath, _dirs, files in os.walk(p):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_size
    except OSError:
        pass
    return total
