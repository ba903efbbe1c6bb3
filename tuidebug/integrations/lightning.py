"""Lightning (``lightning.pytorch``, and the older ``pytorch_lightning``) under ``tuidebug run``.

Every ``Trainer`` the script builds while the probe lives gets one more callback,
:class:`TuidebugCallback` (appended after ``Trainer.__init__``; a trainer built before or
after the run gets nothing). It makes Lightning's own notions the console's:

* the step boundary is Lightning's optimizer step: ``on_train_batch_end`` of a batch after
  which ``trainer.global_step`` moved. With ``accumulate_grad_batches=k`` that is one step per
  k batches, and the step's loss is the mean of its micro-batches' ``training_step`` losses
  (Lightning hands the callback each loss divided by k, as it was backpropagated; it is
  multiplied back). The step number is ``trainer.global_step``, so a run resumed from a
  ``.ckpt`` goes on counting where the checkpoint left off;
* the scalars are what the module logs with ``self.log`` (``trainer.callback_metrics``): each
  value is sent at the first boundary after it was logged (a validation's metrics come with
  the first step after the validation), a metric named ``loss`` as ``logged_loss``;
* the end of each validation (``on_validation_end``, not the sanity check) and of each training
  epoch (``on_train_epoch_end``, also the last, cut short by ``max_steps``) is a ``LoopEvent``
  at ``trainer.global_step``, marked on the console's loss chart ("val", "ep 1"); the
  validation's own metrics go with it;
* save now (and ``--save-every``) calls ``trainer.save_checkpoint`` into the run's checkpoint
  folder, ``epoch=E-step=S.ckpt`` as ModelCheckpoint names them, which Lightning resumes with
  ``trainer.fit(model, ckpt_path=...)``; tuidebug adds the RNG states to it (one more
  top-level key, which Lightning ignores). Restore (``r``) puts a ``.ckpt`` back into the live
  trainer (weights, optimizers, schedulers, grad scaler, step counters, RNG states; not the
  data loader's position): lightning_restore.py;
* a pause (``p``, ``n``, a break condition) holds the run inside ``on_train_batch_end``; the
  frame the console shows and ``d`` debugs in is the script's own ``trainer.fit(...)`` line
  (the innermost frame that is not a library's), with the script's locals.

Lightning's progress bar writes to the script's terminal, which under ``tuidebug run`` is the
run's pty: it shows in the output panel as it would in a terminal.
"""

from __future__ import annotations

import importlib
import logging
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tuidebug.wire.loop_messages import EPOCH, VALIDATION

if TYPE_CHECKING:
    from tuidebug.integrations.owner import Owner
    from tuidebug.probe.extensions.checkpoints import FrameworkRestore
    from tuidebug.probe.hook_api import Hook

log = logging.getLogger("tuidebug.probe")


def patch(module: ModuleType, owner: Owner) -> None:
    """``module`` is ``<package>.trainer.trainer``: give each of its Trainers our callback."""
    package = module.__name__.rsplit(".trainer.trainer", 1)[0]
    base = importlib.import_module(f"{package}.callbacks").Callback
    callback_class = type("TuidebugCallback", (TuidebugCallback, base), {})

    def add_callback(trainer: Any) -> None:
        if not any(isinstance(c, TuidebugCallback) for c in trainer.callbacks):
            trainer.callbacks.append(callback_class(owner))

    owner.wrap_init(module.Trainer, add_callback)


class TuidebugCallback:
    """Mixed with the package's own ``Callback`` class by :func:`patch` (so Lightning accepts
    it whichever of its two package names the script imported)."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._hook: Hook | None = None
        self._trainer: weakref.ref[Any] | None = None
        self._global_step = 0
        self._losses: list[Any] = []  # this step's micro-batch losses, as training_step gave them
        self._sent: dict[str, Any] = {}  # the metric tensors already sent (kept: identity test)
        self._saving = False  # inside our own save now: the .ckpt gets the RNG states too

    # --- Lightning's hooks (each guarded: nothing may raise into the trainer) ------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._owner.live:
            return
        try:
            self._hook = self._owner.attach(pl_module, *trainer.optimizers)
            self._trainer = weakref.ref(trainer)
            self._global_step = trainer.global_step
            self._losses = []
            checkpoints = self._owner.checkpoints()
            if checkpoints is not None:
                checkpoints.framework_saver = self._save
                checkpoints.framework_restorer = self._restore
                folder = checkpoints.folder or str(trainer.default_root_dir)
                checkpoints.framework_folder(folder, "lightning")
        except Exception as error:
            self._fail("on_train_start", error)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._hook is None or not self._owner.live:
            return
        try:
            self._batch_end(trainer, outputs)
        except Exception as error:
            self._fail("on_train_batch_end", error)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._hook is None or not self._owner.live or trainer.sanity_checking:
            return
        try:
            # What the validation logged: the metrics not already sent with a step.
            logged = {
                key: value
                for key, value in dict(trainer.callback_metrics).items()
                if self._sent.get(key) is not value
            }
            epoch = trainer.current_epoch + 1
            self._owner.loop_event(VALIDATION, trainer.global_step, epoch, "lightning", logged)
        except Exception as error:
            self._fail("on_validation_end", error)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._hook is None or not self._owner.live:
            return
        try:  # current_epoch counts the epochs completed, this one not yet
            epoch = trainer.current_epoch + 1
            self._owner.loop_event(EPOCH, trainer.global_step, epoch, "lightning")
        except Exception as error:
            self._fail("on_train_epoch_end", error)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._hook = None
        checkpoints = self._owner.checkpoints()
        if checkpoints is not None and checkpoints.framework_saver == self._save:
            checkpoints.framework_saver = None
        if checkpoints is not None and checkpoints.framework_restorer == self._restore:
            checkpoints.framework_restorer = None

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Our save now's ``.ckpt`` also holds the RNG states (Lightning saves none), taken here
        at the step boundary, so that a restore of it draws what the saved run drew."""
        if not self._saving:
            return
        try:
            from tuidebug.ckpt.framework_state import LIGHTNING_EXTRA_KEY
            from tuidebug.ckpt.rng import capture_rng_states

            checkpoint[LIGHTNING_EXTRA_KEY] = {"rng": capture_rng_states()}
        except Exception as error:  # the checkpoint is still Lightning's own without them
            log.warning("tuidebug: RNG states not added to the checkpoint (%r)", error)

    # --- internals -----------------------------------------------------------------------------

    def _batch_end(self, trainer: Any, outputs: Any) -> None:
        loss: Any = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if getattr(loss, "numel", None) is not None and loss.numel() == 1:
            accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
            loss = loss.detach()
            self._losses.append(loss if accumulate == 1 else loss * accumulate)
        if trainer.global_step == self._global_step:
            return  # a micro-batch: the optimizer has not stepped yet
        self._global_step = trainer.global_step
        losses, self._losses = self._losses, []
        step_loss: Any = None
        if len(losses) == 1:
            step_loss = losses[0]
        elif losses:
            import torch

            step_loss = torch.stack([v.reshape(()).float() for v in losses]).mean()
        probe = self._owner.probe
        probe.step = trainer.global_step - 1  # the boundary below numbers it global_step
        assert self._hook is not None
        self._hook.step(loss=step_loss, **self._new_metrics(trainer))

    def _new_metrics(self, trainer: Any) -> dict[str, Any]:
        """``self.log``'s values not sent yet (a new tensor each time Lightning logs one)."""
        fresh = {}
        for key, value in dict(trainer.callback_metrics).items():
            if self._sent.get(key) is value:
                continue
            self._sent[key] = value
            fresh["logged_loss" if key == "loss" else str(key)] = value
        return fresh

    def _save(self, folder: str, reason: str) -> None:
        """The checkpoints extension's saver while this trainer runs (training thread)."""
        checkpoints = self._owner.checkpoints()
        trainer = self._trainer() if self._trainer is not None else None
        if checkpoints is None or trainer is None:
            return
        step = self._owner.probe.step
        name = f"epoch={trainer.current_epoch}-step={trainer.global_step}.ckpt"
        path = Path(folder or trainer.default_root_dir) / name
        start = time.perf_counter()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._saving = True
            trainer.save_checkpoint(str(path))
        except Exception as error:
            checkpoints.framework_saved(str(path), reason, step, error=f"{error!r}"[:300])
            return
        finally:
            self._saving = False
        seconds = time.perf_counter() - start
        checkpoints.framework_saved(str(path), reason, step, seconds=seconds)

    def _restore(self, path: str, unsafe: bool) -> FrameworkRestore | None:
        """The checkpoints extension's restorer while this trainer runs (training thread, in
        ``on_train_batch_end``): a ``.ckpt`` goes back through the trainer, see
        lightning_restore.py; None for another kind of file (the generic restore)."""
        from tuidebug.integrations import lightning_restore

        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None:
            return None

        def follow() -> None:  # the step count went back: the next optimizer step is new
            self._global_step = trainer.global_step

        return lightning_restore.prepare(trainer, path, unsafe, follow)

    def _fail(self, where: str, error: Exception) -> None:
        """Stop following this trainer (it goes on training) and say why once."""
        self._hook = None
        log.warning("tuidebug: the Lightning integration stopped in %s (%r)", where, error)
