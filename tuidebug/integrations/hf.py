"""Hugging Face ``transformers.Trainer`` under ``tuidebug run``.

How the callback gets in with no change to the script: while the probe lives,
``transformers.trainer.Trainer.__init__`` is wrapped (when the script imports it, see
``tuidebug/integrations/__init__.py``); each trainer built then gets
:class:`TuidebugCallback` through its own ``add_callback``, and its ``training_step`` is
wrapped on that instance only, to read each micro-batch's loss as the Trainer itself sums it.
Subclasses (``Seq2SeqTrainer``, TRL's trainers) go through the same ``__init__``.

* The step boundary is the Trainer's optimizer step (``on_step_end``: one per
  ``gradient_accumulation_steps`` batches); the step number is ``state.global_step``.
* The loss is the sum of that step's ``training_step`` results, which the Trainer has already
  divided by the accumulation steps: the micro-batches' mean, the very value the Trainer logs
  as ``loss`` when ``logging_steps=1`` (with a larger ``logging_steps`` it logs the window's
  mean; the console still gets every step's own loss).
* The scalars are what the Trainer logs (``on_log``): ``learning_rate``, ``grad_norm`` and
  evaluation metrics (``eval_loss``...). A step whose logs are due (``control.should_log`` /
  ``should_evaluate`` are set by then) is reported once they arrived, still before the next
  step begins; metrics logged at other moments (an evaluation at the end of an epoch) go with
  the next step.
* Each epoch's end (``on_epoch_end``) and each evaluation during training (``on_evaluate``,
  with its metrics) is a ``LoopEvent`` at ``state.global_step``, after that step was
  reported: "ep 1", "val" on the console's loss chart.
* Save now (and ``--save-every``) sets ``control.should_save``: the Trainer writes its own
  ``checkpoint-N`` folder in ``output_dir`` at the end of that step, resumable with
  ``trainer.train(resume_from_checkpoint=...)``; the console hears of it from ``on_save``,
  and lists ``output_dir``. Restore (``r``) puts such a folder back into the live Trainer
  (weights, optimizer, scheduler, scaler, trainer state, RNG states; not the data loader's
  position): hf_restore.py.
* A pause holds the run in ``on_step_end`` or ``on_log``, between two optimizer steps; the
  frame shown (and debugged with ``d``) is the script's own ``trainer.train()`` line.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tuidebug.wire.loop_messages import EPOCH, VALIDATION

if TYPE_CHECKING:
    from tuidebug.integrations.owner import Owner
    from tuidebug.probe.extensions.checkpoints import FrameworkRestore
    from tuidebug.probe.hook_api import Hook

log = logging.getLogger("tuidebug.probe")

# Keys of the Trainer's logs that are not charts of their own.
_NOT_SCALARS = frozenset({"loss", "epoch", "step", "total_flos"})
_TIMINGS = ("_runtime", "_per_second")  # eval_runtime, train_samples_per_second...


def patch(module: ModuleType, owner: Owner) -> None:
    """``module`` is ``transformers.trainer``: give each of its Trainers our callback."""
    base = module.TrainerCallback
    callback_class = type("TuidebugCallback", (TuidebugCallback, base), {})

    def follow(trainer: Any) -> None:
        handler = trainer.callback_handler
        if any(isinstance(c, TuidebugCallback) for c in handler.callbacks):
            return
        callback = callback_class(owner)
        callback.trainer = weakref.ref(trainer)  # for a restore (hf_restore.py)
        trainer.add_callback(callback)
        original = trainer.training_step

        @functools.wraps(original)
        def training_step(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            callback.add_loss(loss)
            return loss

        trainer.training_step = training_step

    owner.wrap_init(module.Trainer, follow)


class TuidebugCallback:
    """Mixed with ``transformers.TrainerCallback`` by :func:`patch`."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._hook: Hook | None = None
        self._loss: Any = None  # this step's loss so far (a tensor: no device sync)
        self._pending: tuple[int, Any] | None = None  # (step, loss) waiting for its logs
        self._logs_due = 0  # on_log calls still expected for the pending step
        self._scalars: dict[str, float] = {}
        self._control: Any = None
        self._save_reason: str | None = None
        self._save_started = 0.0
        self._output_dir = ""
        self.trainer: weakref.ref[Any] | None = None

    def add_loss(self, loss: Any) -> None:
        """One micro-batch's ``training_step`` result (summed as the Trainer sums it)."""
        if self._hook is None or getattr(loss, "numel", None) is None or loss.numel() != 1:
            return
        loss = loss.detach()
        self._loss = loss if self._loss is None else self._loss + loss

    # --- the Trainer's events (each guarded: nothing may raise into the Trainer) --------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._owner.live:
            return
        try:
            optimizer = kwargs.get("optimizer")
            optimizer = getattr(optimizer, "optimizer", optimizer)  # inside accelerate's wrapper
            objects = [o for o in (kwargs.get("model"), optimizer) if o is not None]
            self._hook = self._owner.attach(*objects)
            self._control = control
            self._output_dir = str(args.output_dir)
            checkpoints = self._owner.checkpoints()
            if checkpoints is not None:
                checkpoints.framework_saver = self._save
                checkpoints.framework_restorer = self._restore
                checkpoints.framework_folder(self._output_dir, "transformers")
        except Exception as error:
            self._fail("on_train_begin", error)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._control = control
        self._flush()  # logs that never came: report the step all the same
        self._loss = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is None:
            return
        self._control = control
        self._flush()
        self._pending = (int(state.global_step), self._loss)
        self._loss = None
        # DefaultFlowCallback ran before us and decided whether this step logs and evaluates.
        self._logs_due = int(bool(control.should_log)) + int(bool(control.should_evaluate))
        if not self._logs_due:
            self._flush()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self._hook is None:
            return
        self._control = control
        self._scalars.update(_chartable(logs))
        if self._pending is not None:
            self._logs_due -= 1
            if self._logs_due <= 0:
                self._flush()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._save_reason is None:
            return
        reason, self._save_reason = self._save_reason, None
        checkpoints = self._owner.checkpoints()
        if checkpoints is None:
            return
        path = os.path.join(self._output_dir, f"checkpoint-{state.global_step}")
        seconds = time.perf_counter() - self._save_started
        checkpoints.framework_saved(path, reason, int(state.global_step), seconds=seconds)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        self._loop_event(EPOCH, state)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        self._flush()  # the step evaluated is reported first (its eval logs came already)
        self._loop_event(VALIDATION, state, _chartable(metrics))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        self._hook = None
        checkpoints = self._owner.checkpoints()
        if checkpoints is not None and checkpoints.framework_saver == self._save:
            checkpoints.framework_saver = None
        if checkpoints is not None and checkpoints.framework_restorer == self._restore:
            checkpoints.framework_restorer = None

    # --- internals -----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Report the pending step: the boundary, where a pause or a save happens."""
        if self._pending is None or self._hook is None or not self._owner.live:
            return
        (step, loss), self._pending = self._pending, None
        self._logs_due = 0
        scalars, self._scalars = self._scalars, {}
        try:
            self._owner.probe.step = step - 1  # the boundary numbers it global_step
            self._hook.step(loss=loss, **scalars)
        except Exception as error:
            self._fail("a step boundary", error)

    def _loop_event(self, kind: str, state: Any, metrics: dict[str, float] | None = None) -> None:
        """An epoch's end or an evaluation while this Trainer trains (not a later evaluate())."""
        if self._hook is None or not self._owner.live:
            return
        try:
            # state.epoch is fractional (1.0 once the first epoch ended, 1.5 halfway through the
            # second): the epoch an event falls in, counted from 1, is its ceiling.
            epoch = max(1, math.ceil(float(state.epoch or 0) - 1e-6))
            step = int(state.global_step)
            self._owner.loop_event(kind, step, epoch, "transformers", metrics)
        except Exception as error:
            self._fail(f"on_{kind}", error)

    def _save(self, folder: str, reason: str) -> None:
        """The checkpoints extension's saver while this Trainer trains: ask the Trainer."""
        if self._control is None:
            raise RuntimeError("the Trainer has not started training")
        self._control.should_save = True
        self._save_reason = reason
        self._save_started = time.perf_counter()

    def _restore(self, path: str, unsafe: bool) -> FrameworkRestore | None:
        """The checkpoints extension's restorer while this Trainer trains (training thread, at
        a boundary): a ``checkpoint-N`` folder goes back through the Trainer, see
        hf_restore.py; None for anything else (the generic restore)."""
        from tuidebug.integrations import hf_restore

        trainer = self.trainer() if self.trainer is not None else None
        return hf_restore.prepare(trainer, path, unsafe) if trainer is not None else None

    def _fail(self, where: str, error: Exception) -> None:
        self._hook = None
        log.warning("tuidebug: the Hugging Face integration stopped in %s (%r)", where, error)


def _chartable(logs: Any) -> dict[str, float]:
    """The numbers of a Trainer's logs that are charts of their own (not timings, epoch...)."""
    found: dict[str, float] = {}
    for key, value in dict(logs or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key not in _NOT_SCALARS and not str(key).endswith(_TIMINGS):
            found[str(key)] = float(value)
    return found
