"""Capture the full training state and write it so that a crash never leaves a half file.

Why the care: the file people roll back to is the one written while things were going well, and
a run killed mid-save (OOM killer, a preempted node, Ctrl-C twice) must not take that file with
it. A save therefore writes a temporary file in the same folder, fsyncs it, renames it over the
final name with ``os.replace`` (atomic on POSIX), fsyncs the folder so the rename itself is
durable, and only then records the file's sha256 in ``manifest.json`` (also written atomically).
Any failure - full disk, permissions, a state that cannot be pickled - is returned as a failed
:class:`SaveResult` and leaves no temporary file behind.

Everything saved is a tensor or a plain Python value, so the file loads with
``torch.load(weights_only=True)``: restoring never has to run code from a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tuidebug.ckpt.errors import SaveError, one_line
from tuidebug.ckpt.own_format import FORMAT_NAME, FORMAT_VERSION
from tuidebug.ckpt.rng import (
    capture_rank_state,
    capture_rng_states,
    rank_state_file,
    rank_states_folder,
)
from tuidebug.paths import pid_alive

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer

MANIFEST_NAME = "manifest.json"
_LOCK_NAME = ".manifest.lock"
_TMP_RE = re.compile(r"^\..+\.tmp\.(\d+)\.[0-9a-f]{8,}$")


@dataclass
class SaveResult:
    """What a save did. ``ok`` is False on any failure, with ``error`` as one line."""

    ok: bool
    path: str
    sha256: str = ""
    size: int = 0
    step: int | None = None
    loss: float | None = None
    seconds: float = 0.0
    error: str = ""
    removed: list[str] = field(default_factory=list)

    def raise_for_error(self) -> None:
        """Raise :class:`SaveError` when the save failed (for callers that prefer exceptions)."""
        if not self.ok:
            raise SaveError(self.error)


# --------------------------------------------------------------------------- capture


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Turn run metadata into values ``weights_only`` accepts (str for anything exotic).

    Metadata comes from user code (argparse namespaces, Paths, numpy scalars); storing such an
    object as is would make the checkpoint need full unpickling to load.
    """
    import torch

    if _depth > 20:
        return repr(obj)[:200]
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, torch.Tensor):
        if obj.numel() == 1:
            return obj.detach().cpu().item()
        return obj.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v, _depth + 1) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        with contextlib.suppress(Exception):
            return to_plain(obj.item(), _depth + 1)
    if hasattr(obj, "__dict__") and type(obj).__name__ == "Namespace":
        return to_plain(vars(obj), _depth + 1)
    return str(obj)


def capture_training_state(
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer],
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    step: int,
    epoch: int | None,
    metadata: Mapping[str, Any] | None = None,
    loaders: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect everything an exact resume needs into one dict of tensors and plain values.

    Call it on the training thread at a step boundary (after ``optimizer.step()``), so that no
    tensor is half updated. ``loaders`` takes objects with ``state_dict()`` - a
    :class:`tuidebug.ckpt.data.ResumableLoader` or torchdata's ``StatefulDataLoader`` - whose
    position in the epoch must be saved for the data order to continue where it stopped.

    The model state dicts share storage with the live parameters (no copy): save the result
    right away, before the next step changes them.
    """
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "epoch": None if epoch is None else int(epoch),
        "models": {name: m.state_dict() for name, m in models.items()},
        "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
        **capture_rest(schedulers=schedulers, scaler=scaler, loaders=loaders, metadata=metadata),
    }


def capture_rest(
    *,
    schedulers: Mapping[str, Any] | None,
    scaler: Any,
    loaders: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The training state's entries besides models and optimizers: schedulers, scaler,
    loaders, this process's generators and the run's metadata (plain values)."""
    meta: dict[str, Any] = {
        "time": time.time(),
        "script": sys.argv[0] if sys.argv else "",
        "args": list(sys.argv[1:]),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with contextlib.suppress(Exception):
        import torch

        meta["torch_version"] = str(torch.__version__)
    meta.update(to_plain(dict(metadata or {})))
    if "loss" in meta and meta["loss"] is not None:
        try:
            meta["loss"] = float(meta["loss"])
        except (TypeError, ValueError):
            meta["loss"] = None
    return {
        "schedulers": {name: s.state_dict() for name, s in (schedulers or {}).items()},
        "scaler": None if scaler is None else scaler.state_dict(),
        "loaders": {name: to_plain(ld.state_dict()) for name, ld in (loaders or {}).items()},
        "rng": capture_rng_states(),
        "metadata": meta,
    }


# --------------------------------------------------------------------------- atomic write


class _HashingWriter:
    """A write-only file wrapper that hashes what goes through it (no second read of the file)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += view.nbytes
        try:
            return self._f.write(view)
        except OSError as exc:
            # torch's C++ writer replaces this with "unexpected pos"; keep the real cause
            self.error = exc
            raise

    def flush(self) -> None:
        self._f.flush()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp.{os.getpid()}.{secrets.token_hex(6)}")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _manifest_lock(folder: Path) -> Iterator[None]:
    """Serialize manifest updates between processes saving into the same folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_manifest(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the manifest entries of ``folder`` (empty when there is none or it is damaged)."""
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return []
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)]


def _write_manifest(folder: Path, entries: list[dict[str, Any]]) -> None:
    body = json.dumps({"version": 1, "checkpoints": entries}, indent=1, allow_nan=False)
    _write_bytes_atomic(folder / MANIFEST_NAME, body.encode("utf-8"))


def _finite_or_none(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def clean_temp_files(folder: str | os.PathLike[str], *, keep: Path | None = None) -> list[str]:
    """Remove temporary files left by saves that died (their pid is gone or is this process).

    Temporary files of another live process are left alone: it may be saving right now. The
    temporary folders of sharded saves (ckpt/sharded.py, named after rank 0's pid) go too.
    """
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TMP_RE.match(name)
        if m is None:
            continue
        path = Path(folder) / name
        if keep is not None and path == keep:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or not pid_alive(pid):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(name)
    return removed


def temp_path(final: str | os.PathLike[str]) -> Path:
    """A hidden name beside ``final`` that :func:`clean_temp_files` removes once this process
    is gone (a save that died half way leaves nothing under the final name)."""
    return _tmp_name(Path(final).absolute())


def publish_folder(tmp: Path, final: Path) -> None:
    """Put a complete folder ``tmp`` in place of ``final`` (atomic rename; a folder already
    there, a save of the same step, is moved aside first and removed after)."""
    old: Path | None = None
    if final.exists():
        old = _tmp_name(final)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def record_in_manifest(folder: Path, entry: dict[str, Any]) -> None:
    """Add (or replace) the manifest entry of ``entry["file"]``, under the folder's lock."""
    with _manifest_lock(folder):
        entries = [e for e in read_manifest(folder) if e["file"] != entry["file"]]
        entries.append(entry)
        _write_manifest(folder, entries)


def atomic_save(
    state: Mapping[str, Any], path: str | os.PathLike[str], *, manifest: bool = True
) -> SaveResult:
    """Write ``state`` to ``path`` atomically and record its sha256 in the folder's manifest.

    Never raises for I/O problems: a full disk, a permission error or an unpicklable state gives
    ``SaveResult(ok=False, error=...)`` and no file under the final name is created or damaged.
    A previous file of the same name is replaced only once the new one is complete on disk.
    """
    t0 = time.perf_counter()
    final = Path(path).absolute()
    folder = final.parent
    step = state.get("step") if isinstance(state.get("step"), int) else None
    meta = state.get("metadata")
    loss = _finite_or_none(meta.get("loss")) if isinstance(meta, Mapping) else None
    result = SaveResult(ok=False, path=str(final), step=step, loss=loss)
    tmp = _tmp_name(final)
    writer: _HashingWriter | None = None
    try:
        import torch

        if not folder.is_dir():
            raise SaveError(f"folder does not exist: {folder}")
        result.removed.extend(clean_temp_files(folder))
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(dict(state), writer)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(folder)
        result.sha256 = writer.hash.hexdigest()
        result.size = writer.size
        if manifest:
            entry = {
                "file": final.name,
                "sha256": result.sha256,
                "size": result.size,
                "step": step,
                "epoch": state.get("epoch") if isinstance(state.get("epoch"), int) else None,
                "loss": loss,
                "time": time.time(),
                "format": state.get("format") if isinstance(state.get("format"), str) else None,
            }
            record_in_manifest(folder, entry)
        result.ok = True
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not isinstance(exc, Exception):
            raise
        cause = writer.error if writer is not None and writer.error is not None else exc
        result.error = one_line(cause)
    result.seconds = time.perf_counter() - t0
    return result


def default_name(step: int) -> str:
    """The file name a save at ``step`` gets: sortable, one per step."""
    return f"step-{int(step):08d}.pt"


def save_now(
    folder: str | os.PathLike[str],
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer],
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    step: int,
    epoch: int | None,
    metadata: Mapping[str, Any] | None = None,
    loaders: Mapping[str, Any] | None = None,
    keep: int | None = None,
    name: str | None = None,
) -> SaveResult:
    """Capture, save atomically to ``folder/step-NNNNNNNN.pt`` and prune to ``keep`` files.

    This is the one call behind the console's "save now" key and ``--save-every N --keep K``.
    A capture failure (a scheduler whose state cannot be taken, say) is a failed result too.
    """
    target = Path(folder) / (name or default_name(step))
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        state = capture_training_state(
            models=models,
            optimizers=optimizers,
            schedulers=schedulers,
            scaler=scaler,
            step=step,
            epoch=epoch,
            metadata=metadata,
            loaders=loaders,
        )
    except Exception as exc:
        return SaveResult(ok=False, path=str(target.absolute()), step=step, error=one_line(exc))
    result = atomic_save(state, target)
    if result.ok and keep is not None:
        result.removed.extend(prune(folder, keep))
    return result


def save_rank_state(
    checkpoint: str | os.PathLike[str], *, rank: int, world_size: int, step: int
) -> SaveResult:
    """Write this rank's generators beside a job's ``checkpoint`` (``CHECKPOINT.ranks/``).

    Not in the folder's manifest (the checkpoint is; ``prune`` removes these with it). A capture
    or folder failure is a failed result like an I/O one.
    """
    target = rank_state_file(checkpoint, rank)
    try:
        # parents: under --save-every a rank may get here before rank 0 made the folder
        target.parent.mkdir(parents=True, exist_ok=True)
        state = capture_rank_state(rank, world_size, step)
    except Exception as exc:
        return SaveResult(ok=False, path=str(target.absolute()), step=step, error=one_line(exc))
    return atomic_save(state, target, manifest=False)


def rank_state_error(
    checkpoint: str | os.PathLike[str], *, rank: int, world_size: int, step: int
) -> str:
    """:func:`save_rank_state` for a probe, whose run it must never end: the failure in one
    line, or "" when the file was written."""
    try:
        result = save_rank_state(checkpoint, rank=rank, world_size=world_size, step=step)
    except Exception as failure:
        return one_line(failure)
    return "" if result.ok else result.error


def prune(folder: str | os.PathLike[str], keep: int) -> list[str]:
    """Keep the ``keep`` newest checkpoints recorded in the manifest; delete the older ones.

    Only files this package wrote (those in the manifest) are ever deleted; anything else in
    the folder is the user's. Stale temporary files of dead saves are removed as well.
    Returns the names removed.
    """
    if keep < 0:
        raise ValueError("keep must be >= 0")
    root = Path(folder)
    removed = clean_temp_files(root)
    with _manifest_lock(root):
        entries = read_manifest(root)
        present = [e for e in entries if _present(root / e["file"])]

        def order(e: dict[str, Any]) -> tuple[float, float]:
            step = e.get("step")
            return (float(step) if isinstance(step, int) else -1.0, float(e.get("time") or 0.0))

        present.sort(key=order)
        doomed = present[: max(0, len(present) - keep)]
        gone = {e["file"] for e in doomed}
        kept = [e for e in entries if e["file"] not in gone and _present(root / e["file"])]
        # The manifest drops the entries first: a crash in between leaves an unlisted (but
        # complete) file, never a manifest entry whose file is gone.
        if kept != entries:
            _write_manifest(root, kept)
        for e in doomed:
            with contextlib.suppress(OSError):
                doomed_path = root / e["file"]
                if doomed_path.is_dir():  # a sharded checkpoint (ckpt/sharded.py)
                    shutil.rmtree(doomed_path)
                else:
                    os.unlink(doomed_path)
                removed.append(e["file"])
            # a torchrun job's per-rank generators go with their checkpoint
            ranks = rank_states_folder(root / e["file"])
            if ranks.is_dir() and not ranks.is_symlink():
                shutil.rmtree(ranks, ignore_errors=True)
    return removed


def _present(path: Path) -> bool:
    """A checkpoint of the manifest still there: a file, or a sharded save's folder."""
    return path.is_file() or (path.is_dir() and not path.is_symlink())


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class VerifyResult:
    """One manifest entry checked against the file on disk."""

    file: str
    ok: bool
    reason: str = ""


def verify(folder: str | os.PathLike[str]) -> list[VerifyResult]:
    """Check every manifest entry: the file exists and its sha256 matches."""
    out: list[VerifyResult] = []
    for e in read_manifest(folder):
        p = Path(folder) / e["file"]
        # a sharded save's folder: its sha256 is its .metadata's, and the shard files that
        # names must all be there, long enough (formats/dcp.py; no shard is read)
        sharded = p.is_dir() and not p.is_symlink()
        try:
            digest = sha256_file(p / ".metadata" if sharded else p)
        except OSError as exc:
            out.append(VerifyResult(e["file"], False, one_line(exc)))
            continue
        problem = ""
        if digest != e.get("sha256"):
            problem = "sha256 differs from the manifest"
        elif sharded:
            from tuidebug.ckpt.formats.dcp import shard_problems

            problem = shard_problems(p)
        out.append(VerifyResult(e["file"], not problem, problem))
    return out
