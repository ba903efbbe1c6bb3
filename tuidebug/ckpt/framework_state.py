"""A framework's own checkpoint, read for a restore into its live trainer: loaded and checked.

In a run whose loop is Lightning's or Hugging Face's, save now writes the framework's own
checkpoint (a Lightning ``.ckpt``, a Trainer ``checkpoint-N/`` folder; tuidebug/integrations/).
Putting one back into the live run goes through the trainer's own objects (its loops' step
counters, its schedulers, its precision plugin), which only the integration knows. This module
is the part that needs no framework: it loads every file without running code from it and
checks the parts against the live model, optimizers and schedulers, so that a file that does not
fit is refused (:class:`DoesNotFit`, with the diff) before anything changes.

Safety, as everywhere in :mod:`tuidebug.ckpt`:
* torch files are loaded with ``torch.load(weights_only=True)`` (:func:`load_object`); one that
  needs pickle globals raises :class:`UnsafeCheckpoint` unless the user chose ``unsafe`` (the
  console's second confirmation), which loads it with full unpickling;
* a folder's model weights come from ``model*.safetensors`` through the safetensors package, or
  ``pytorch_model*.bin`` through the same safe loader (the folder reader of formats/hf.py);
* ``rng_state.pth`` holds numpy's generator state as an array: it is loaded with numpy's array
  constructors admitted and nothing else, as the Trainer itself loads it;
* ``trainer_state.json`` is JSON; ``training_args.bin`` (a pickled ``TrainingArguments``) is
  never opened: the live run's arguments stay.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuidebug.ckpt.diff import StateDiff, flatten_tensors
from tuidebug.ckpt.errors import CheckpointError, UnreadableCheckpoint
from tuidebug.ckpt.formats import (
    is_hf_folder,
    load_unsafe,
    model_state,
    safe_torch_load,
    sniff,
    torch_object_format,
)
from tuidebug.ckpt.formats.hf import _hf_model_files
from tuidebug.ckpt.formats.safetensors_file import SAFETENSORS
from tuidebug.ckpt.restore import check_fits, normalize_training_state
from tuidebug.ckpt.rng import rng_states_from

if TYPE_CHECKING:
    from torch import nn

LIGHTNING_EXTRA_KEY = "tuidebug"
"""The entry tuidebug's own save now adds to a Lightning ``.ckpt`` (RNG states: Lightning saves
none); Lightning ignores top-level keys it does not know, so the file still resumes there."""

HF_STATE_FIELDS = (
    "global_step",
    "log_history",
    "best_metric",
    "best_global_step",
    "best_model_checkpoint",
    "total_flos",
    "num_input_tokens_seen",
)
"""The fields of ``trainer_state.json`` a restore puts back into the live ``TrainerState``: the
run's counters and history. Its ``epoch`` is recomputed by the live loop at the next step; its
settings (``max_steps``, ``logging_steps``...) are the live run's."""


def load_object(path: str | os.PathLike[str], *, unsafe: bool = False) -> Any:
    """One torch file: weights only, or fully unpickled after the user's explicit ``unsafe``."""
    if unsafe:
        return load_unsafe(path, i_accept_code_execution=True)
    return safe_torch_load(path, mmap=False)


def load_lightning(path: str | os.PathLike[str], *, unsafe: bool = False) -> dict[str, Any] | None:
    """A Lightning ``.ckpt``'s dict, or None when the file holds something else (a tuidebug
    training state, a bare state dict: the generic restore takes those)."""
    obj = load_object(path, unsafe=unsafe)
    if torch_object_format(obj) != "lightning":
        return None
    if not isinstance(obj.get("state_dict"), Mapping):
        raise UnreadableCheckpoint(f"{Path(path).name}: a Lightning checkpoint without weights")
    return dict(obj)


def check_lightning(
    ckpt: Mapping[str, Any],
    module: nn.Module,
    optimizers: Sequence[Any],
    schedulers: Sequence[Any],
) -> StateDiff:
    """The ``.ckpt``'s weights, optimizer and LR scheduler states against the live ones."""
    state = normalize_training_state(ckpt)
    d = check_fits(state, {"model": module}, {f"optimizer{i}": o for i, o in enumerate(optimizers)})
    check_schedulers(list(ckpt.get("lr_schedulers") or []), schedulers, d)
    return d


def check_schedulers(saved: Sequence[Any], live: Sequence[Any], d: StateDiff) -> None:
    """Saved LR scheduler states against the live schedulers, in order.

    ``load_state_dict`` of a scheduler copies whatever it is given into the object, so another
    scheduler class's state would be taken silently: the saved fields must be the live ones.
    """
    if not saved:
        if live:
            d.notes.append(
                "the checkpoint holds no LR scheduler state; schedulers left as they are"
            )
        return
    if len(saved) != len(live):
        d.problems.append(f"{len(saved)} LR scheduler state(s) saved, {len(live)} live")
        return
    for i, (state, scheduler) in enumerate(zip(saved, live, strict=True)):
        if not isinstance(state, Mapping):
            d.problems.append(f"LR scheduler {i}: the saved state is not a state dict")
            continue
        saved_keys, live_keys = set(state), set(scheduler.state_dict())
        if saved_keys != live_keys:
            d.problems.append(
                f"LR scheduler {i}: the saved state is not a {type(scheduler).__name__}'s "
                f"(only saved: {sorted(saved_keys - live_keys)}, "
                f"only live: {sorted(live_keys - saved_keys)})"
            )


def fill_tied_weights(saved: dict[str, Any], module: nn.Module) -> list[str]:
    """Add to ``saved`` the live keys it lacks because they share a tensor with one it has.

    A model with tied weights (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) is
    stored once per tensor by ``save_pretrained``, while its ``state_dict()`` names the tensor
    twice. The key that was left out gets its partner's saved value (what loading it would put
    there anyway), so the fit check stays exact for every other key. Returns one note per key.
    """
    by_tensor: dict[tuple[Any, ...], list[str]] = {}
    for key, tensor in module.state_dict().items():
        if tensor.numel() == 0:
            continue
        ident = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
        )
        by_tensor.setdefault(ident, []).append(key)
    notes = []
    for keys in by_tensor.values():
        present = [k for k in keys if k in saved]
        if not present or len(present) == len(keys):
            continue
        for key in keys:
            if key not in saved:
                saved[key] = saved[present[0]]
                notes.append(f"{key} is tied to {present[0]} (stored once)")
    return notes


@dataclass
class HfCheckpoint:
    """The parts of a Trainer ``checkpoint-N/`` folder, loaded; a part it lacks is None."""

    path: Path
    trainer_state: dict[str, Any]
    weights: dict[str, Any]
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    rng: dict[str, Any] | None = None
    """Generator states in :func:`tuidebug.ckpt.rng.capture_rng_states`'s layout."""
    notes: list[str] = field(default_factory=list)

    @property
    def step(self) -> int:
        return int(self.trainer_state["global_step"])


def load_hf(
    path: str | os.PathLike[str],
    *,
    unsafe: bool = False,
    process_index: int = 0,
    world_size: int = 1,
) -> HfCheckpoint | None:
    """A Trainer checkpoint folder, every file read safely; None when ``path`` is no such folder.

    Raises :class:`UnreadableCheckpoint` / :class:`UnsafeCheckpoint` naming the file at fault.
    ``process_index`` and ``world_size`` choose the RNG file (``rng_state_R.pth`` in a job).
    """
    p = Path(path)
    if not p.is_dir() or not is_hf_folder(p):
        return None
    state_file = p / "trainer_state.json"
    if not state_file.is_file():
        raise UnreadableCheckpoint(
            f"{p.name}: no trainer_state.json: model files only (save_pretrained?), "
            "not a Trainer checkpoint"
        )
    try:
        trainer_state = json.loads(state_file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UnreadableCheckpoint(f"{p.name}/trainer_state.json: {error}") from None
    if not isinstance(trainer_state, dict) or not isinstance(trainer_state.get("global_step"), int):
        raise UnreadableCheckpoint(f"{p.name}/trainer_state.json: no global_step")
    ckpt = HfCheckpoint(p, trainer_state, _named(p, lambda: _hf_weights(p, unsafe)))
    ckpt.optimizer = _part(p, "optimizer.pt", unsafe)
    ckpt.scheduler = _part(p, "scheduler.pt", unsafe)
    ckpt.scaler = _part(p, "scaler.pt", unsafe)
    rng_name = f"rng_state_{process_index}.pth" if world_size > 1 else "rng_state.pth"
    if (p / rng_name).is_file():
        ckpt.rng = _named(p, lambda: hf_rng_states(_load_rng(p / rng_name, unsafe), rng_name))
    if ckpt.optimizer is None:
        ckpt.notes.append("no optimizer.pt (save_only_model?): optimizer states left as they are")
    if ckpt.rng is None:
        ckpt.notes.append(f"no {rng_name}: random generators left as they are")
    return ckpt


def hf_rng_states(obj: Any, name: str = "rng_state.pth") -> dict[str, Any]:
    """Hugging Face's RNG file (``random.getstate()``, ``np.random.get_state()``, torch's CPU
    and CUDA states as is) in the layout :func:`tuidebug.ckpt.rng.restore_rng_states` takes."""
    import torch

    if not isinstance(obj, Mapping) or not isinstance(obj.get("cpu"), torch.Tensor):
        raise UnreadableCheckpoint(f"{name}: not the Trainer's RNG states")
    cuda = obj.get("cuda")
    if isinstance(cuda, torch.Tensor):  # one device's (a run of one process)
        cuda = [cuda]
    try:
        return rng_states_from(obj.get("python"), obj.get("numpy"), obj["cpu"], list(cuda or []))
    except (TypeError, ValueError) as error:
        raise UnreadableCheckpoint(f"{name}: not the Trainer's RNG states ({error})") from None


def _hf_weights(p: Path, unsafe: bool) -> dict[str, Any]:
    if not unsafe:
        return model_state(p)
    weights: dict[str, Any] = {}
    for f in _hf_model_files(p):
        if sniff(f) == "safetensors":
            weights.update(SAFETENSORS.model_state(f, "safetensors"))
        else:
            weights.update(flatten_tensors(load_object(f, unsafe=True)))
    return weights


def _load_rng(path: Path, unsafe: bool) -> Any:
    if unsafe:
        return load_object(path, unsafe=True)
    return safe_torch_load(path, mmap=False, numpy_arrays=True)


def _part(folder: Path, name: str, unsafe: bool) -> Any:
    """One optional torch file of the folder (None when it is not there)."""
    path = folder / name
    if not path.is_file():
        return None
    return _named(folder, lambda: load_object(path, unsafe=unsafe))


def _named(folder: Path, load: Any) -> Any:
    """``load()``, with its error message led by the folder's name ("checkpoint-5/...")."""
    try:
        return load()
    except CheckpointError as error:
        raise type(error)(f"{folder.name}/{error}") from None
