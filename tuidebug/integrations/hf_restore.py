"""Restore a Trainer ``checkpoint-N/`` folder into the live ``Trainer.train``: the console's ``r``.

The callback (hf.py) hands this to the checkpoints extension as its ``framework_restorer``
while a Trainer trains. The restore runs on the training thread at a step boundary, which for
the Trainer is the end of an optimizer step (``on_step_end``, or ``on_log`` when that step
logs): the optimizer and the scheduler have stepped, the next batch is not drawn yet. The
Trainer writes a checkpoint at the end of that same step (after its logs and evaluation), so
putting one back there continues the run as the saved one went on, but for what a live run
cannot take back (below).

Restored, after every part was checked against the live objects (a folder that does not fit
changes nothing):
* the model's weights (``model.safetensors`` or ``pytorch_model.bin``, sharded or not; a key
  left out because its tensor is tied to another, as GPT-2's ``lm_head.weight``, gets its
  partner's value), strictly;
* ``optimizer.pt`` into the optimizer, ``scheduler.pt`` into the LR scheduler (the saved
  fields must be the live class's), ``scaler.pt`` into the accelerator's grad scaler when both
  exist;
* from ``trainer_state.json`` the counters and history (``HF_STATE_FIELDS``: ``global_step``,
  so ``max_steps`` counts from there again, ``log_history``, the best metric and checkpoint,
  ``total_flos``, tokens seen); the loss accumulated since the last log is cleared and the
  last-logged step set to the checkpoint's, so the next logged loss is the new branch's own;
* ``rng_state.pth`` (``rng_state_R.pth`` on rank R of a job) into python's, numpy's and
  torch's generators, last.

Not restored, and why:
* the data loader's position: the running epoch's iterator cannot be rewound, so the next
  batch is the one after the batch the run was at (a dataset of one batch draws it anew each
  epoch from the restored generators, which the tests use); so also the epoch loop itself: the
  epochs go on counting, and a run restored near its end may stop before ``max_steps``;
* callbacks' states (``stateful_callbacks``: TrainerControl, EarlyStopping), the run's final
  ``train_loss`` average (it counts the abandoned steps), ``training_args.bin`` (never opened:
  a pickle; the live arguments stay);
* DeepSpeed and FSDP runs are refused: resume those with ``resume_from_checkpoint``.
"""

from __future__ import annotations

from typing import Any

from tuidebug.probe.extensions.checkpoints import FrameworkRestore

NOT_RESTORED = (
    "not restored: the data loader's position (the running epoch goes on with its next "
    "batch), the epoch count, callbacks' states"
)


def prepare(trainer: Any, path: str, unsafe: bool) -> FrameworkRestore | None:
    """Load and check ``path`` against ``trainer``; None when it is not a checkpoint folder.

    Raises a ``CheckpointError`` (``DoesNotFit`` with the diff) before anything changed.
    """
    import torch

    from tuidebug.ckpt import DoesNotFit, RestoreError, check_fits
    from tuidebug.ckpt.framework_state import (
        HF_STATE_FIELDS,
        check_schedulers,
        fill_tied_weights,
        load_hf,
    )
    from tuidebug.ckpt.rng import restore_rng_states

    args = trainer.args
    ckpt = load_hf(
        path,
        unsafe=unsafe,
        process_index=int(getattr(args, "process_index", 0) or 0),
        world_size=int(getattr(args, "world_size", 1) or 1),
    )
    if ckpt is None:
        return None
    sharded = getattr(trainer, "is_deepspeed_enabled", False) or getattr(
        trainer, "is_fsdp_enabled", False
    )
    if sharded:
        raise RestoreError(
            "a live restore under DeepSpeed or FSDP is not supported; resume with "
            "trainer.train(resume_from_checkpoint=...)"
        )
    model = trainer.model
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper
    scheduler = getattr(trainer.lr_scheduler, "scheduler", trainer.lr_scheduler)
    scaler = getattr(getattr(trainer, "accelerator", None), "scaler", None)
    tied = fill_tied_weights(ckpt.weights, model)
    state = {
        "models": {"model": ckpt.weights},
        "optimizers": {"optimizer": ckpt.optimizer} if ckpt.optimizer is not None else {},
    }
    d = check_fits(state, {"model": model}, {"optimizer": optimizer} if optimizer else None)
    check_schedulers(
        [ckpt.scheduler] if ckpt.scheduler is not None else [],
        [scheduler] if scheduler is not None else [],
        d,
    )
    if not d.fits:
        raise DoesNotFit(d)
    step = ckpt.step
    fields = {k: ckpt.trainer_state[k] for k in HF_STATE_FIELDS if k in ckpt.trainer_state}

    restored = ["model weights"]
    if optimizer is not None and ckpt.optimizer is not None:
        restored.append("optimizer")
    if scheduler is not None and ckpt.scheduler is not None:
        restored.append("LR scheduler")
    if scaler is not None and ckpt.scaler is not None:
        restored.append("grad scaler")
    restored.append(f"trainer state (global_step {step}, log history)")
    if ckpt.rng is not None:
        restored.append("RNG states")
    notes = [*tied, *d.notes, *ckpt.notes, NOT_RESTORED]
    if scaler is not None and ckpt.scaler is None:
        notes.append("grad scaler left as it is (no scaler.pt)")

    def apply() -> list[str]:
        model.load_state_dict(ckpt.weights, strict=True)
        if optimizer is not None and ckpt.optimizer is not None:
            optimizer.load_state_dict(ckpt.optimizer)
        if scheduler is not None and ckpt.scheduler is not None:
            scheduler.load_state_dict(ckpt.scheduler)
        if scaler is not None and ckpt.scaler is not None:
            scaler.load_state_dict(ckpt.scaler)
        for name, value in fields.items():
            if hasattr(trainer.state, name):
                setattr(trainer.state, name, list(value) if name == "log_history" else value)
        # The Trainer logs the mean loss since its last log: start that window here.
        trainer._globalstep_last_logged = step
        accumulated = getattr(trainer, "_tr_loss", None)
        if isinstance(accumulated, torch.Tensor):
            with torch.no_grad():
                accumulated.zero_()
        return restore_rng_states(ckpt.rng) if ckpt.rng is not None else []

    return FrameworkRestore(step=step, apply=apply, restored=restored, notes=notes)
