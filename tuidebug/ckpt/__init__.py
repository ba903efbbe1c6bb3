"""Checkpoints: atomic save, safe reading of every common format, fit checks, diff, restore.

This package is imported by the probe (inside the training process) and by the console, so it
imports neither Rich nor Textual, and torch only inside functions (the console must start
without paying for a torch import). The Rich command line lives in :mod:`tuidebug.ckpt.cli`.

The calls the probe and console make:

* save now / ``--save-every``: :func:`save_now` (or :func:`capture_training_state` +
  :func:`atomic_save`), then :func:`prune` for ``--keep``;
* restore / ``--resume``: :func:`load_training_state`, :func:`check_fits`,
  :func:`apply_training_state` (or :func:`resume` for all three);
* browser: :func:`list_checkpoints`, :func:`detail`, :func:`diff_state_dicts`,
  :func:`model_state`.
"""

from __future__ import annotations

from tuidebug.ckpt.data import ResumableLoader
from tuidebug.ckpt.diff import Mismatch, StateDiff, TensorChange, diff_state_dicts
from tuidebug.ckpt.errors import (
    CheckpointError,
    DoesNotFit,
    RestoreError,
    SaveError,
    UnreadableCheckpoint,
    UnsafeCheckpoint,
)
from tuidebug.ckpt.formats import (
    CheckpointDetail,
    CheckpointInfo,
    KeyNode,
    TensorEntry,
    detail,
    list_checkpoints,
    load_unsafe,
    model_state,
    read_info,
)
from tuidebug.ckpt.restore import (
    apply_training_state,
    check_fits,
    load_training_state,
    resume,
)
from tuidebug.ckpt.save import (
    SaveResult,
    atomic_save,
    capture_training_state,
    prune,
    read_manifest,
    save_now,
    verify,
)

__all__ = [
    "CheckpointDetail",
    "CheckpointError",
    "CheckpointInfo",
    "DoesNotFit",
    "KeyNode",
    "Mismatch",
    "RestoreError",
    "ResumableLoader",
    "SaveError",
    "SaveResult",
    "StateDiff",
    "TensorChange",
    "TensorEntry",
    "UnreadableCheckpoint",
    "UnsafeCheckpoint",
    "apply_training_state",
    "atomic_save",
    "capture_training_state",
    "check_fits",
    "detail",
    "diff_state_dicts",
    "list_checkpoints",
    "load_training_state",
    "load_unsafe",
    "model_state",
    "prune",
    "read_info",
    "read_manifest",
    "resume",
    "save_now",
    "verify",
]
