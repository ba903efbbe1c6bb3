"""Save and restore a sharded training state (FSDP, DTensor) with torch.distributed.checkpoint.

A model under FSDP (``fully_shard``, ``FullyShardedDataParallel``) or with DTensor parameters
holds on each rank only its own shards, so the one-file save of ckpt/save.py (rank 0 writes the
replicated state) does not apply. Here every rank takes part, at the same paused step
(supervisor/ranks.py sends the command to all of them):

* Save: each rank takes sharded state dicts of its models and optimizers
  (``torch.distributed.checkpoint.state_dict.get_state_dict``: no gather to rank 0), splits off
  their tensors and writes its own shards with DCP into one temporary folder beside the final
  one; rank 0 also writes :data:`STATE_FILE` there: the step, epoch, schedulers, scaler,
  loaders, its generators, the run's metadata and the state dicts' plain values (optimizer
  options such as ``lr`` and ``betas``, with tensors left as a marker), a ``weights_only``
  torch file. DCP gets tensors only, so its ``.metadata`` names no pickled "bytes" entry. Once
  DCP's own finish (rank 0 writes ``.metadata`` after every rank wrote its files) is done,
  rank 0 renames the folder into place (``step-NNNNNNNN.dcp``), records it in the manifest
  (sha256 of its ``.metadata``) and prunes as for files. Every rank's generators go beside it
  afterwards (``FOLDER.ranks/``, probe/extensions/rank_rng.py).
* Restore: each rank reads the metadata with the restricted unpickler (formats/dcp.py) and
  :data:`STATE_FILE` with ``weights_only``, checks every live tensor against the saved
  global shapes and dtypes, and only when every rank found that it fits (one
  ``all_gather_object`` of the ranks' refusals) loads its shards in place with
  :class:`SafeReader` (tensors with ``weights_only``, bytes entries refused) and sets the
  state back with ``set_state_dict``.

The agreement before the collective keeps a rank that failed alone (no folder, a capture that
raised) from leaving the others inside DCP's collectives: every rank reaches it, and either
all go on or all report the failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner

from tuidebug.ckpt.diff import StateDiff, dtype_name
from tuidebug.ckpt.errors import DoesNotFit, RestoreError, UnreadableCheckpoint, one_line
from tuidebug.ckpt.formats.dcp import METADATA_FILE, STATE_FILE, read_dcp_metadata
from tuidebug.ckpt.own_format import FORMAT_NAME, FORMAT_VERSION
from tuidebug.ckpt.save import (
    SaveResult,
    atomic_save,
    capture_rest,
    clean_temp_files,
    prune,
    publish_folder,
    record_in_manifest,
    sha256_file,
    temp_path,
)

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer

SHARDED = "dcp"
TENSOR = "<tensor in the DCP shards>"  # where a tensor was, in STATE_FILE's state dicts


def sharded_name(step: int) -> str:
    """The folder a sharded save at ``step`` gets: sortable, one per step."""
    return f"step-{int(step):08d}.dcp"


# --------------------------------------------------------------------------- state dicts


def _pair(
    models: Mapping[str, nn.Module], optimizers: Mapping[str, Optimizer]
) -> dict[str, list[Optimizer]]:
    """Each model's optimizers (those whose parameters are all its own), in the given order:
    ``get_state_dict`` takes one model and the optimizers of its parameters."""
    owned: dict[str, list[Optimizer]] = {name: [] for name in models}
    params = {name: {id(p) for p in m.parameters()} for name, m in models.items()}
    for opt_name, opt in optimizers.items():
        ids = {id(p) for group in opt.param_groups for p in group["params"]}
        owner = next((name for name, own in params.items() if ids <= own), None)
        if owner is None:
            raise ValueError(f"optimizer {opt_name!r} holds parameters of no single model")
        owned[owner].append(opt)
    return owned


def _state_dicts(
    models: Mapping[str, nn.Module], owned: Mapping[str, list[Optimizer]]
) -> dict[str, Any]:
    """``{"models": {name: sharded model state}, "optimizers": {name: its optimizers' state}}``."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    out: dict[str, Any] = {"models": {}, "optimizers": {}}
    for name, model in models.items():
        if owned[name]:
            msd, osd = get_state_dict(model, owned[name])
            out["optimizers"][name] = osd
        else:
            msd = get_model_state_dict(model)
        out["models"][name] = msd
    return out


def split_tensors(obj: Any) -> tuple[Any, dict[str, Any]]:
    """``obj`` with every tensor replaced by :data:`TENSOR` (plain values only), and the
    tensors as nested dicts of the same path (list positions as "0", "1"...)."""
    if isinstance(obj, torch.Tensor):
        return TENSOR, {}
    tensors: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        plain: Any = {}
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        plain, items = [], list(enumerate(obj))
    else:
        return obj, {}
    for key, value in items:
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
            kept: Any = TENSOR
        else:
            kept, inner = split_tensors(value)
            if inner:
                tensors[str(key)] = inner
        if isinstance(plain, dict):
            plain[key] = kept
        else:
            plain.append(kept)
    if isinstance(obj, tuple):
        plain = tuple(plain)
    return plain, tensors


def join_tensors(plain: Any, tensors: Any, path: str = "") -> Any:
    """The inverse of :func:`split_tensors`: markers replaced by the tensors at their path."""
    if isinstance(plain, str) and plain == TENSOR:
        if not isinstance(tensors, torch.Tensor):
            raise UnreadableCheckpoint(f"no tensor for {path or 'the state'}")
        return tensors
    if isinstance(plain, Mapping):
        return {
            k: join_tensors(v, _child(tensors, k), f"{path}.{k}" if path else str(k))
            for k, v in plain.items()
        }
    if isinstance(plain, (list, tuple)):
        joined = [
            join_tensors(v, _child(tensors, i), f"{path}.{i}" if path else str(i))
            for i, v in enumerate(plain)
        ]
        return tuple(joined) if isinstance(plain, tuple) else joined
    return plain


def _child(tensors: Any, key: Any) -> Any:
    return tensors.get(str(key)) if isinstance(tensors, Mapping) else None


def _flat(tensors: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, tensor) as DCP flattens nested dicts (its keys in ``.metadata``)."""
    for key, value in tensors.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            yield from _flat(value, dotted)
        else:
            yield dotted, value


def _marked(plain: Any, prefix: str = "") -> Iterator[str]:
    """The dotted keys of the tensors a :func:`split_tensors` result stood for."""
    if isinstance(plain, str) and plain == TENSOR:
        yield prefix
        return
    if isinstance(plain, Mapping):
        items: list[tuple[Any, Any]] = list(plain.items())
    elif isinstance(plain, (list, tuple)):
        items = list(enumerate(plain))
    else:
        return
    for key, value in items:
        yield from _marked(value, f"{prefix}.{key}" if prefix else str(key))


# --------------------------------------------------------------------------- the ranks agree


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def agree(error: str, value: Any = None) -> tuple[str, Any]:
    """Every rank's refusal (first one, "rank R: ..."; "" when none) and rank 0's ``value``.

    The one collective that every rank reaches whatever happened before it."""
    if _world() == 1:
        return error, value
    gathered: list[Any] = [None] * _world()
    dist.all_gather_object(gathered, (error, value))
    for rank, (err, _) in enumerate(gathered):
        if err:
            return (err if rank == dist.get_rank() else f"rank {rank}: {err}"), gathered[0][1]
    return "", gathered[0][1]


# --------------------------------------------------------------------------- save


def save_sharded(
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
) -> SaveResult:
    """Save on every rank together (call it on all of them at the same step); rank 0's result
    describes the checkpoint, the others' only whether their part went well. Never raises."""
    t0 = time.perf_counter()
    rank = dist.get_rank() if _world() > 1 else 0
    root = Path(folder).absolute()
    final = root / sharded_name(step)
    result = SaveResult(ok=False, path=str(final), step=step)
    error, tmp = "", None
    try:
        root.mkdir(parents=True, exist_ok=True)
        owned = _pair(models, optimizers)
        with _quiet():
            state = _state_dicts(models, owned)
        plain, tensors = split_tensors(state)
        if rank == 0:
            result.removed.extend(clean_temp_files(root))
            tmp = temp_path(final)
            tmp.mkdir()
            rest = capture_rest(
                schedulers=schedulers, scaler=scaler, loaders=loaders, metadata=metadata
            )
            side = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "sharded": SHARDED,
                "step": int(step),
                "epoch": None if epoch is None else int(epoch),
                "world_size": _world(),
                "models": plain["models"],
                "optimizers": plain["optimizers"],
                **rest,
            }
            written = atomic_save(side, tmp / STATE_FILE, manifest=False)
            if not written.ok:
                raise OSError(written.error)
            result.loss = written.loss
    except Exception as exc:
        error = one_line(exc)
    error, shared = agree(error, None if tmp is None else str(tmp))
    if not error:
        try:
            with _quiet():
                torch.distributed.checkpoint.save(
                    tensors, storage_writer=FileSystemWriter(str(shared), sync_files=True)
                )
        except (Exception, CheckpointException) as exc:  # on every rank, when any failed
            error = _failure(exc)
    if rank == 0 and not error and tmp is not None:
        try:
            publish_folder(tmp, final)
            result.size = sum(f.stat().st_size for f in final.iterdir() if f.is_file())
            result.sha256 = sha256_file(final / METADATA_FILE)
            record_in_manifest(
                root,
                {
                    "file": final.name,
                    "sha256": result.sha256,
                    "size": result.size,
                    "step": step,
                    "epoch": epoch,
                    "loss": result.loss,
                    "time": time.time(),
                    "format": FORMAT_NAME,
                    "sharded": SHARDED,
                },
            )
            if keep is not None:
                result.removed.extend(prune(root, keep))
        except Exception as exc:
            error = one_line(exc)
    if error and tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    result.ok, result.error = not error, error
    result.seconds = time.perf_counter() - t0
    return result


def _failure(exc: BaseException) -> str:
    """One line for a failure; DCP's CheckpointException (a BaseException, not an
    Exception) carries each failed rank's own exception: the first one, by rank."""
    if isinstance(exc, CheckpointException) and exc.failures:
        rank, (first, _trace) = min(exc.failures.items(), key=lambda item: item[0])
        return f"rank {rank}: {one_line(first)}"
    return one_line(exc)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DCP and FSDP warn about deprecated paths on every call: not the run's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------- restore


class SafeReader(FileSystemReader):
    """DCP's file reader without its pickle: ``.metadata`` through the restricted unpickler,
    and no "bytes" entry (``torch.load(weights_only=False)`` in DCP's planner) read at all;
    tensors are read as DCP reads them, with ``weights_only=True``."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        path = Path(self._get_metadata_path(kwargs.get("rank")))
        if path.name != METADATA_FILE:
            raise UnreadableCheckpoint(f"{path.name}: per-rank metadata files are not read")
        md = read_dcp_metadata(path.parent)
        if md.storage_meta is not None:
            md.storage_meta.load_id = self.load_id
        return md

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Any:
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                raise UnreadableCheckpoint(
                    f"{item.dest_index.fqn} is a pickled object in the checkpoint (not read)"
                )
        return super().read_data(plan, planner)


def _fit_problems(md: Any, live: Mapping[str, Any], saved_plain: Mapping[str, Any]) -> StateDiff:
    """Every live tensor against the metadata (global shape, dtype), and the saved tensor
    list against the live one: what would make the load fail or cast."""
    d = StateDiff()
    entries = md.state_dict_metadata
    saved_keys = set(_marked(saved_plain))
    live_keys: set[str] = set()
    for key, tensor in _flat(live):
        live_keys.add(key)
        entry = entries.get(key)
        if entry is None or key not in saved_keys:
            d.missing.append(key)
            continue
        size = getattr(entry, "size", None)
        props = getattr(entry, "properties", None)
        if size is None or props is None:
            d.problems.append(f"{key}: saved as a pickled object, not a tensor")
            continue
        from tuidebug.ckpt.diff import Mismatch

        shape, saved_shape = tuple(tensor.shape), tuple(int(s) for s in size)
        if shape != saved_shape:
            d.shape_mismatches.append(
                Mismatch(key, saved_shape, shape, dtype_name(props.dtype), dtype_name(tensor.dtype))
            )
        elif props.dtype != tensor.dtype:
            d.dtype_mismatches.append(
                Mismatch(key, saved_shape, shape, dtype_name(props.dtype), dtype_name(tensor.dtype))
            )
    d.unexpected.extend(sorted(saved_keys - live_keys))
    return d


def load_sharded_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sharded save's :data:`STATE_FILE` (``weights_only``), checked to be one of ours."""
    from tuidebug.ckpt.formats import safe_torch_load

    state = safe_torch_load(Path(path) / STATE_FILE, mmap=False)
    if not isinstance(state, dict) or state.get("sharded") != SHARDED:
        raise UnreadableCheckpoint(f"{Path(path).name}: {STATE_FILE} is not a sharded save's")
    return state


def restore_sharded(
    path: str | os.PathLike[str],
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer],
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    loaders: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore on every rank together; returns the state file's content (its ``step``...).

    Raises :class:`DoesNotFit` (on the rank that found it; the others a
    :class:`RestoreError` naming that rank) before anything changed, and
    :class:`RestoreError` when the load failed part way."""
    from tuidebug.ckpt.restore import apply_rest

    diff: StateDiff | None = None
    error = ""
    state: dict[str, Any] = {}
    live: dict[str, Any] = {}
    owned: dict[str, list[Optimizer]] = {}
    try:
        p = Path(path)
        if not p.is_dir():
            raise UnreadableCheckpoint(
                f"{p.name}: a sharded model is restored from a torch.distributed.checkpoint "
                "folder (a sharded save), not from a file"
            )
        md = read_dcp_metadata(p)
        state = load_sharded_state(p)
        if not models:
            raise RestoreError("no model seen yet: nothing to restore into")
        saved_models = state.get("models") or {}
        if set(saved_models) != set(models) and not (len(saved_models) == len(models) == 1):
            raise RestoreError(
                f"models {sorted(saved_models)} in the checkpoint, {sorted(models)} live"
            )
        owned = _pair(models, optimizers)
        with _quiet():
            live = _state_dicts(models, owned)
        # one model under another name: the saved name is what the shards are keyed by
        if len(saved_models) == 1 and set(saved_models) != set(models):
            (saved_name,), (live_name,) = list(saved_models), list(models)
            live = {part: {saved_name: sd[live_name]} if sd else {} for part, sd in live.items()}
            owned = {saved_name: owned[live_name]}
        saved_opts = state.get("optimizers") or {}
        for name, opts in owned.items():
            if opts and name not in saved_opts:
                raise RestoreError(f"the checkpoint holds no optimizer state for model {name!r}")
        _plain, live_tensors = split_tensors(live)
        saved_plain = {"models": saved_models, "optimizers": saved_opts}
        diff = _fit_problems(md, live_tensors, saved_plain)
        if not diff.fits:
            error = "the checkpoint does not fit the live model"
    except Exception as exc:
        error = one_line(exc)
    error, _ = agree(error)
    if error:
        if diff is not None and not diff.fits:
            raise DoesNotFit(diff)
        raise RestoreError(error)
    try:
        with _quiet():
            torch.distributed.checkpoint.load(live_tensors, storage_reader=SafeReader(str(path)))
            from torch.distributed.checkpoint.state_dict import (
                set_model_state_dict,
                set_state_dict,
            )

            for name, model in zip(owned, models.values(), strict=True):
                msd = join_tensors(state["models"][name], live_tensors.get("models", {}).get(name))
                if owned[name]:
                    live_opt = live_tensors.get("optimizers", {}).get(name, {})
                    osd = join_tensors(state["optimizers"][name], live_opt)
                    set_state_dict(model, owned[name], model_state_dict=msd, optim_state_dict=osd)
                else:
                    set_model_state_dict(model, msd)
        apply_rest(state, schedulers=schedulers, scaler=scaler, loaders=loaders)
    except (Exception, CheckpointException) as exc:
        raise RestoreError(
            f"restore failed part way ({_failure(exc)}); the live state may be mixed"
        ) from exc
    return state
