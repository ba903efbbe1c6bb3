"""Capture and restore every random number generator a training step can draw from.

The states are stored as tensors and plain Python values only, so that a checkpoint stays
loadable with ``torch.load(weights_only=True)``: python's ``random.getstate()`` is a tuple of
ints and numpy's legacy state holds an ndarray, neither of which the safe loader accepts as is.
"""

from __future__ import annotations

import random
from typing import Any


def capture_rng_states() -> dict[str, Any]:
    """Return python, numpy (if importable), torch CPU and CUDA generator states.

    CUDA states are taken only when CUDA is already initialized in this process: a run that has
    not touched CUDA has not drawn from its generators, and initializing CUDA just to save them
    would cost the run a device context.
    """
    import torch

    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(list(internal), dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": None,
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    try:
        import numpy as np
    except ImportError:  # numpy is optional for the probe side
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        states["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
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
