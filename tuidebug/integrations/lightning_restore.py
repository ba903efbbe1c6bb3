"""Restore a Lightning ``.ckpt`` into the live ``Trainer.fit``: the console's restore (``r``).

The callback (lightning.py) hands this to the checkpoints extension as its
``framework_restorer`` while a trainer trains; the restore runs on the training thread at a
step boundary, which in Lightning is ``on_train_batch_end`` of an optimizer step: the
optimizer and the step-interval LR schedulers have stepped, the next batch is not drawn yet.
A save now is written at that same place, so putting one back there continues the run as the
saved one went on, but for what a live run cannot take back (below).

Restored, in this order, after the whole file was checked against the live objects (a file
that does not fit changes nothing):
* the LightningModule's weights (``strategy.load_model_state_dict``, strict);
* every optimizer's state (``strategy.load_optimizer_state_dict``), every LR scheduler's
  (``trainer.lr_scheduler_configs``, in order; the saved fields must be the live class's);
* the precision plugin's state, that is the AMP grad scaler (``MixedPrecision``'s), when both
  the file and the live plugin have one;
* the step counters, as ``Trainer.fit(ckpt_path=)`` would set them and only the totals: the
  optimizer steps (``trainer.global_step``: ``max_steps`` counts from there again), zero_grad
  calls, scheduler steps, batches seen in all (``val_check_interval`` in global batches), and
  the logger's step (``_batches_that_stepped``);
* the random generators (python, numpy, torch CPU and CUDA), when the file has them: Lightning
  saves none, tuidebug's save now adds them (``LIGHTNING_EXTRA_KEY``).

Not restored, and why:
* the data loader's position: the running epoch's iterator cannot be rewound, so the next
  batch is the one after the batch the run was at (an epoch of one batch starts anew each step,
  which the tests use); so also the epoch counter (``current_epoch``) and the batch index within
  the epoch, which describe that iterator;
* callbacks' states (ModelCheckpoint's best scores, EarlyStopping's patience), the logger's
  rows already written, a DataModule's state, and no ``on_load_checkpoint`` hook is called;
* sharded strategies (FSDP, DeepSpeed) are refused: resume those with ``ckpt_path=``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tuidebug.probe.extensions.checkpoints import FrameworkRestore

NOT_RESTORED = (
    "not restored: the data loader's position (the running epoch goes on with its next "
    "batch), the epoch counter, callbacks' and the logger's states"
)
NO_RNG = (
    "random generators left as they are (not in this .ckpt: Lightning saves none, tuidebug's "
    "save now adds them)"
)
# Lightning's FSDP and DeepSpeed strategies shard or wrap the states this module loads whole.
_SHARDED = frozenset({"FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy"})


def prepare(
    trainer: Any, path: str, unsafe: bool, on_applied: Callable[[], None]
) -> FrameworkRestore | None:
    """Load and check ``path`` against ``trainer``; None when it is not a Lightning ``.ckpt``.

    Raises a ``CheckpointError`` (``DoesNotFit`` with the diff) before anything changed.
    ``on_applied`` runs once the file is in (the callback follows the new step count).
    """
    from tuidebug.ckpt import DoesNotFit, RestoreError
    from tuidebug.ckpt.framework_state import LIGHTNING_EXTRA_KEY, check_lightning, load_lightning
    from tuidebug.ckpt.rng import restore_rng_states

    ckpt = load_lightning(path, unsafe=unsafe)
    if ckpt is None:
        return None
    strategy = trainer.strategy
    if _SHARDED & {c.__name__ for c in type(strategy).__mro__}:
        raise RestoreError(
            f"a live restore under {type(strategy).__name__} is not supported; resume with "
            "trainer.fit(..., ckpt_path=...)"
        )
    optimizers = list(trainer.optimizers)
    configs = list(trainer.lr_scheduler_configs)
    d = check_lightning(ckpt, trainer.lightning_module, optimizers, [c.scheduler for c in configs])
    if not d.fits:
        raise DoesNotFit(d)
    step = int(ckpt.get("global_step") or 0)
    counters = _counters(trainer, ckpt, step)
    plugin = trainer.precision_plugin
    plugin_state = ckpt.get(type(plugin).__qualname__)
    live_plugin_state = plugin.state_dict()
    extra = ckpt.get(LIGHTNING_EXTRA_KEY)
    rng = extra.get("rng") if isinstance(extra, Mapping) else None
    saved_optimizers = list(ckpt.get("optimizer_states") or [])
    saved_schedulers = list(ckpt.get("lr_schedulers") or [])

    restored = ["model weights"]
    if optimizers and saved_optimizers:
        restored.append(f"{len(optimizers)} optimizer(s)")
    if configs and saved_schedulers:
        restored.append(f"{len(configs)} LR scheduler(s)")
    if live_plugin_state and isinstance(plugin_state, Mapping):
        restored.append("grad scaler")
    restored.append(f"step counters (global_step {step})")
    if rng:
        restored.append("RNG states")
    notes = [*d.notes, NOT_RESTORED]
    if live_plugin_state and not isinstance(plugin_state, Mapping):
        notes.append("grad scaler left as it is (not in the checkpoint)")
    if not rng:
        notes.append(NO_RNG)

    def apply() -> list[str]:
        strategy.load_model_state_dict(ckpt, strict=True)
        if optimizers and saved_optimizers:
            strategy.load_optimizer_state_dict(ckpt)
        if configs and saved_schedulers:
            for config, state in zip(configs, saved_schedulers, strict=True):
                config.scheduler.load_state_dict(state)
        if live_plugin_state and isinstance(plugin_state, Mapping):
            plugin.load_state_dict(plugin_state)
        for tracker, state in counters.trackers:
            tracker.load_state_dict(state)
        trainer.fit_loop.epoch_loop._batches_that_stepped = counters.batches_that_stepped
        more = restore_rng_states(rng) if rng else []  # last: nothing draws after it
        on_applied()
        return more

    return FrameworkRestore(step=step, apply=apply, restored=restored, notes=notes)


class _Counters:
    """The progress totals to load: (the live tracker's ``total``, its new state) pairs."""

    def __init__(self) -> None:
        self.trackers: list[tuple[Any, dict[str, int]]] = []
        self.batches_that_stepped = 0


def _counters(trainer: Any, ckpt: Mapping[str, Any], step: int) -> _Counters:
    """The step counters a restore sets, read from the ``.ckpt``'s ``loops`` (or its
    ``global_step`` where a total is missing), planned before anything is applied.

    Only totals: each tracker's ``current`` counts within the live epoch, whose iterator goes
    on. We are inside ``on_train_batch_end``, where Lightning has not yet counted this batch
    as completed nor this step in ``_batches_that_stepped`` (it does both right after): the
    saved values are brought to that same place whichever place the file was saved at.
    """
    loops = ckpt.get("loops")
    fit = loops.get("fit_loop") if isinstance(loops, Mapping) else None
    fit = fit if isinstance(fit, Mapping) else {}
    epoch_loop = trainer.fit_loop.epoch_loop
    plan = _Counters()

    def total(key: str, *path: str) -> dict[str, int] | None:
        node: Any = fit.get(key)
        for name in (*path, "total"):
            node = node.get(name) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and all(isinstance(v, int) for v in node.values()):
            return dict(node)
        return None

    def plan_total(tracker: Any, saved: dict[str, int] | None) -> None:
        if saved is not None and set(saved) <= set(vars(tracker)):
            plan.trackers.append((tracker, saved))

    steps = {"ready": step, "completed": step}
    if trainer.lightning_module.automatic_optimization:
        optim = epoch_loop.automatic_optimization.optim_progress.optimizer
        key = "epoch_loop.automatic_optimization.optim_progress"
        plan_total(optim.step.total, total(key, "optimizer", "step") or steps)
        plan_total(optim.zero_grad.total, total(key, "optimizer", "zero_grad"))
    else:
        progress = epoch_loop.manual_optimization.optim_step_progress
        plan_total(
            progress.total, total("epoch_loop.manual_optimization.optim_step_progress") or steps
        )
    plan_total(epoch_loop.scheduler_progress.total, total("epoch_loop.scheduler_progress"))
    batches = total("epoch_loop.batch_progress")
    mid_batch = True  # saved inside on_train_batch_end too (save now, ModelCheckpoint by steps)
    if batches is not None and "processed" in batches:
        mid_batch = batches.get("completed", 0) < batches["processed"]
        seen = batches["processed"]
        plan_total(
            epoch_loop.batch_progress.total,
            {**batches, "ready": seen, "started": seen, "processed": seen, "completed": seen - 1},
        )
    stepped = fit.get("epoch_loop.state_dict")
    saved_stepped = stepped.get("_batches_that_stepped") if isinstance(stepped, Mapping) else None
    if isinstance(saved_stepped, int):
        plan.batches_that_stepped = saved_stepped if mid_batch else max(0, saved_stepped - 1)
    else:
        plan.batches_that_stepped = max(0, step - 1)
    return plan
