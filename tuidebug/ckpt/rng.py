"""Capture and restore every random number generator a training step can draw from.

The states are stored as tensors and plain Python values only, so that a checkpoint stays
loadable with ``torch.load(weights_only=True)``: python's ``random.getstate()`` is a tuple of
ints and numpy's legacy state holds an ndarray, neither of which the safe loader accepts as is.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

# A torchrun job's checkpoint holds the model once; each rank's generators lie beside it in
# ``CHECKPOINT.ranks/rank-R.pt`` (written by probe/extensions/rank_rng.py, read by the ckpt CLI
# and pruned with their checkpoint by ckpt/save.py).
RANK_STATE_FORMAT = "tuidebug-rank-rng"
_RANK_FILE = re.compile(r"rank-(\d+)\.pt")


def capture_rng_states() -> dict[str, Any]:
    """Return python, numpy (if importable), torch CPU and CUDA generator states.

    CUDA states are taken only when CUDA is already initialized in this process: a run that has
    not touched CUDA has not drawn from its generators, and initializing CUDA just to save them
    would cost the run a device context.
    """
    import torch

    try:
        import numpy as np
    except ImportError:  # numpy is optional for the probe side
        numpy_state = None
    else:
        numpy_state = np.random.get_state(legacy=True)
    cuda: list[Any] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return rng_states_from(random.getstate(), numpy_state, torch.get_rng_state(), cuda)


def rng_states_from(python: Any, numpy: Any, cpu: Any, cuda: list[Any]) -> dict[str, Any]:
    """Generator states as :func:`random.getstate`, ``numpy.random.get_state`` and torch give
    them (each may be None), in the layout of :func:`capture_rng_states` (tensors and plain
    values). Also the reader of Hugging Face's ``rng_state.pth``, which holds them as is."""
    import torch

    states: dict[str, Any] = {"python": None, "numpy": None, "torch": cpu, "cuda": list(cuda)}
    if python is not None:
        version, internal, gauss_next = python
        states["python"] = {
            "version": int(version),
            "state": torch.tensor(list(internal), dtype=torch.int64),
            "gauss_next": gauss_next,
        }
    if numpy is not None:
        import numpy as np

        kind, keys, pos, has_gauss, cached = numpy
        states["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return states


def restore_rng_states(states: dict[str, Any]) -> list[str]:
    """Set the generators back to ``states``; returns notes about what could not be restored."""
    import torch

    notes: list[str] = []
    py = states.get("python")
    if py is not None:
        internal = tuple(int(v) for v in py["state"].tolist())
        random.setstate((int(py["version"]), internal, py["gauss_next"]))
    np_state = states.get("numpy")
    if np_state is not None:
        try:
            import numpy as np
        except ImportError:
            notes.append("numpy RNG state not restored: numpy is not installed")
        else:
            np.random.set_state(
                (
                    np_state["kind"],
                    np.asarray(np_state["keys"].numpy(), dtype=np.uint32),
                    int(np_state["pos"]),
                    int(np_state["has_gauss"]),
                    float(np_state["cached_gaussian"]),
                )
            )
    cpu = states.get("torch")
    if cpu is not None:
        torch.set_rng_state(cpu.to(torch.uint8).cpu())
    cuda = list(states.get("cuda") or [])
    if cuda:
        if not torch.cuda.is_available():
            notes.append("CUDA RNG states not restored: CUDA is not available here")
        elif len(cuda) != torch.cuda.device_count():
            notes.append(
                f"CUDA RNG states not restored: saved for {len(cuda)} devices, "
                f"{torch.cuda.device_count()} here"
            )
        else:
            torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])
    return notes


def rank_states_folder(checkpoint: str | os.PathLike[str]) -> Path:
    """The folder beside ``checkpoint`` that holds every rank's generators."""
    return Path(f"{os.fspath(checkpoint)}.ranks")


def rank_state_file(checkpoint: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` keeps its generators for ``checkpoint``."""
    return rank_states_folder(checkpoint) / f"rank-{rank}.pt"


def rank_state_files(checkpoint: str | os.PathLike[str]) -> dict[int, Path]:
    """The rank files beside ``checkpoint``, by rank (empty for a one-process checkpoint)."""
    folder = rank_states_folder(checkpoint)
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    found = {int(m[1]): folder / name for name in names if (m := _RANK_FILE.fullmatch(name))}
    return dict(sorted(found.items()))


def capture_rank_state(rank: int, world_size: int, step: int) -> dict[str, Any]:
    """One rank's file: its generators and where it was (loadable with ``weights_only``)."""
    return {
        "format": RANK_STATE_FORMAT,
        "rank": rank,
        "world_size": world_size,
        "step": step,
        "rng": capture_rng_states(),
    }


def read_rank_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A rank file, loaded safely; ``ValueError`` when it is not one."""
    import torch

    state = torch.load(path, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != RANK_STATE_FORMAT:
        raise ValueError(f"{Path(path).name} is not a rank RNG file")
    return state


def restore_rank_rng(checkpoint: str | os.PathLike[str], rank: int) -> list[str] | None:
    """Set this rank's generators from its own file beside ``checkpoint``: what
    :func:`restore_rng_states` noted, or None when there is no such file (a checkpoint of one
    process, or saved before the job wrote rank files). Raises when the file is unreadable."""
    source = rank_state_file(checkpoint, rank)
    if not source.is_file():
        return None
    return restore_rng_states(read_rank_state(source)["rng"])
