"""Load a saved training state safely, check that it fits the live objects, and apply it.

Loading uses ``torch.load(weights_only=True)`` only: restoring never runs code from a file.
Applying is all or nothing at the check level: :func:`apply_training_state` first compares every
model and optimizer with the checkpoint and raises :class:`DoesNotFit` (carrying the diff) before
touching anything, so a wrong file cannot leave the run half restored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tuidebug.ckpt.diff import Mismatch, StateDiff, diff_state_dicts, dtype_name
from tuidebug.ckpt.errors import DoesNotFit, RestoreError, UnreadableCheckpoint
from tuidebug.ckpt.own_format import FORMAT_NAME
from tuidebug.ckpt.rng import restore_rng_states

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer


def load_training_state(
    path: str | os.PathLike[str], *, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint as a training-state dict, never unpickling arbitrary objects.

    Files written by :func:`tuidebug.ckpt.atomic_save` come back as they were saved. A Lightning
    ``.ckpt`` dict and a bare model state dict are converted (model weights, and for Lightning
    the optimizer states, step and epoch), so ``--resume`` also works with them.
    Raises :class:`UnsafeCheckpoint` or :class:`UnreadableCheckpoint`.
    """
    from tuidebug.ckpt.formats import safe_torch_load

    obj = safe_torch_load(path, mmap=False, map_location=map_location)
    return normalize_training_state(obj, source=str(path))


def normalize_training_state(obj: Any, *, source: str = "checkpoint") -> dict[str, Any]:
    """Bring a loaded checkpoint to the training-state layout (see :func:`load_training_state`)."""
    import torch

    if not isinstance(obj, Mapping):
        raise UnreadableCheckpoint(f"{source}: not a dict of tensors ({type(obj).__name__})")
    if obj.get("format") == FORMAT_NAME:
        return dict(obj)
    if isinstance(obj.get("state_dict"), Mapping) and (
        "global_step" in obj or "pytorch-lightning_version" in obj or "epoch" in obj
    ):
        opt_states = obj.get("optimizer_states") or []
        return {
            "format": "lightning",
            "step": int(obj.get("global_step") or 0),
            "epoch": obj.get("epoch") if isinstance(obj.get("epoch"), int) else None,
            "models": {"model": dict(obj["state_dict"])},
            "optimizers": {f"optimizer{i}": s for i, s in enumerate(opt_states)},
            "schedulers": {},
            "scaler": None,
            "loaders": {},
            "rng": {},
            "metadata": {},
        }
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {
            "format": "state_dict",
            "step": 0,
            "epoch": None,
            "models": {"model": dict(obj)},
            "optimizers": {},
            "schedulers": {},
            "scaler": None,
            "loaders": {},
            "rng": {},
            "metadata": {},
        }
    raise UnreadableCheckpoint(
        f"{source}: not a training state (no models), nor a Lightning or model state dict"
    )


def _pair(
    saved: Mapping[str, Any], live: Mapping[str, Any], what: str, d: StateDiff
) -> list[tuple[str, Any, Any]]:
    """Match saved and live entries by name; a lone entry on each side matches regardless."""
    if len(saved) == 1 and len(live) == 1:
        (sn, sv), (ln, lv) = next(iter(saved.items())), next(iter(live.items()))
        if sn != ln:
            d.notes.append(f"{what} {sn!r} in the checkpoint applied to {ln!r}")
        return [(ln, sv, lv)]
    pairs = []
    for name, lv in live.items():
        if name in saved:
            pairs.append((name, saved[name], lv))
        else:
            d.problems.append(f"{what} {name!r} is not in the checkpoint")
    for name in saved:
        if name not in live:
            d.notes.append(f"{what} {name!r} in the checkpoint has no live counterpart")
    return pairs


def _check_optimizer(name: str, saved: Any, opt: Optimizer, d: StateDiff) -> None:
    import torch

    if not isinstance(saved, Mapping) or "param_groups" not in saved or "state" not in saved:
        d.problems.append(f"optimizer {name!r}: saved state is not an optimizer state dict")
        return
    groups = saved["param_groups"]
    live_groups = opt.param_groups
    if len(groups) != len(live_groups):
        d.problems.append(
            f"optimizer {name!r}: {len(groups)} param groups saved, {len(live_groups)} live"
        )
        return
    params: dict[Any, Any] = {}
    for i, (g, lg) in enumerate(zip(groups, live_groups, strict=True)):
        ids = list(g.get("params", []))
        if len(ids) != len(lg["params"]):
            d.problems.append(
                f"optimizer {name!r}: group {i} has {len(ids)} params saved, "
                f"{len(lg['params'])} live"
            )
            return
        params.update(zip(ids, lg["params"], strict=True))
        saved_keys = set(g) - {"params"}
        live_keys = set(lg) - {"params"}
        if saved_keys != live_keys:
            d.notes.append(
                f"optimizer {name!r}: group {i} options differ "
                f"(only saved: {sorted(saved_keys - live_keys)}, "
                f"only live: {sorted(live_keys - saved_keys)}); another optimizer type?"
            )
    for pid, st in saved["state"].items():
        p = params.get(pid)
        if p is None:
            d.problems.append(f"optimizer {name!r}: state for unknown param {pid!r}")
            continue
        if not isinstance(st, Mapping):
            continue
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != tuple(p.shape):
                d.shape_mismatches.append(
                    Mismatch(
                        f"{name}.state.{pid}.{k}",
                        tuple(v.shape),
                        tuple(p.shape),
                        dtype_name(v.dtype),
                        dtype_name(p.dtype),
                    )
                )


def check_fits(
    state: Mapping[str, Any],
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer] | None = None,
) -> StateDiff:
    """Compare a loaded training state with live models and optimizers (nothing is changed).

    Model keys are reported as ``"<model name>.<key>"``. Shapes and dtypes must match exactly
    (a silent cast would make the resumed run differ from the one that was saved).
    """
    d = StateDiff()
    saved_models = state.get("models")
    if not isinstance(saved_models, Mapping):
        d.problems.append("the checkpoint holds no model state")
        return d
    for name, sd, model in _pair(saved_models, models, "model", d):
        if not isinstance(sd, Mapping):
            d.problems.append(f"model {name!r}: saved state is not a state dict")
            continue
        d.merge(diff_state_dicts(sd, model.state_dict(), compute_change=False), f"{name}.")
    saved_opts = state.get("optimizers") or {}
    if optimizers:
        if not saved_opts:
            d.notes.append("the checkpoint holds no optimizer state; optimizers left as they are")
        else:
            for name, so, opt in _pair(saved_opts, optimizers, "optimizer", d):
                _check_optimizer(name, so, opt, d)
    return d


def apply_training_state(
    state: Mapping[str, Any],
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    loaders: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
) -> int:
    """Load ``state`` into the live objects and return the step to continue from.

    Call at a step boundary on the training thread. Raises :class:`DoesNotFit` (with the diff)
    before changing anything when a model or optimizer does not match. RNG states are restored
    last, so that the next step draws exactly the numbers the saved run would have drawn.
    """
    d = check_fits(state, models, optimizers)
    if not d.fits:
        raise DoesNotFit(d)
    try:
        for _name, sd, model in _pair(state["models"], models, "model", StateDiff()):
            model.load_state_dict(sd, strict=True)
        saved_opts = state.get("optimizers") or {}
        if optimizers and saved_opts:
            for _name, so, opt in _pair(saved_opts, optimizers, "optimizer", StateDiff()):
                opt.load_state_dict(so)
        apply_rest(
            state, schedulers=schedulers, scaler=scaler, loaders=loaders, restore_rng=restore_rng
        )
    except Exception as exc:
        raise RestoreError(
            f"restore failed part way ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the live state may be mixed"
        ) from exc
    return int(state.get("step") or 0)


def apply_rest(
    state: Mapping[str, Any],
    *,
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    loaders: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
) -> None:
    """Load what follows the models and optimizers: schedulers, scaler, loader positions and
    the generators (last, so that the next step draws what the saved run drew). Raises what
    they raise; a sharded restore shares it (ckpt/sharded.py)."""
    saved_sched = state.get("schedulers") or {}
    if schedulers and saved_sched:
        for _name, ss, sched in _pair(saved_sched, schedulers, "scheduler", StateDiff()):
            sched.load_state_dict(ss)
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    saved_loaders = state.get("loaders") or {}
    if loaders and saved_loaders:
        for _name, sl, ld in _pair(saved_loaders, loaders, "loader", StateDiff()):
            ld.load_state_dict(sl)
    if restore_rng and state.get("rng"):
        restore_rng_states(state["rng"])


def resume(
    path: str | os.PathLike[str],
    *,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    loaders: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load ``path`` and apply it; returns the state (``state["step"]``, ``state["epoch"]``...).

    The one call behind ``tuidebug run --resume PATH`` and the console's restore key.
    """
    state = load_training_state(path)
    apply_training_state(
        state,
        models=models,
        optimizers=optimizers,
        schedulers=schedulers,
        scaler=scaler,
        loaders=loaders,
    )
    return state
