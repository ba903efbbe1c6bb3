"""Checkpoints in the probe: save now, ``--save-every``/``--keep``, restore, ``--resume``, diff.

Everything that touches training state runs on the training thread at a step boundary: the
console's commands arrive through the gate (``ckpt-save``, ``ckpt-restore`` with ``path`` and
optionally ``unsafe=1``, ``ckpt-diff`` with ``path``), and ``--save-every`` is an integer compare
in ``on_boundary``. Nothing here raises into the script: a failed save or restore is a
:class:`CheckpointSaved` / :class:`CheckpointRestored` message with a one-line reason.

Which objects make up "the training state": the probe knows the models and optimizers. LR
schedulers, grad scalers and resumable loaders are not seen by any hook, so they are found when
needed (at a save or restore, never per step) among the live objects: schedulers whose
``optimizer`` is one of ours, every ``GradScaler`` (the one whose ``scale``/``step`` the probe
saw first: probe/amp.py), every ``ResumableLoader`` (or torchdata
``StatefulDataLoader``). This covers ``tuidebug.attach(model, opt, sched, scaler)`` as well.

Where a restore is applied, and why that keeps a resume exact (docs/checkpoints.md):
* A save happens at a boundary; a restore happens at a boundary too, so the code after the
  boundary (``scheduler.step()``, drawing the next batch, dropout) runs from the same state as
  in the run that saved.
* ``--resume`` with the hook object: applied when ``tuidebug.attach`` names the model and the
  optimizer, before the loop starts (``dbg.step()`` ends an iteration, so the loop's top is the
  same place as a boundary, and a ``ResumableLoader`` has not been iterated yet).
* ``--resume`` without it: the optimizer is only seen at its first ``step()``, and the models at
  the end of that first step. The checkpoint is applied at that first boundary; the first step's
  work is overwritten (``discarded=1``, reported as step 1 in the history). Exact when the next
  batch is decided after the boundary (data drawn from the restored generators); an iterator
  already running (a DataLoader's epoch) is not rewound.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tuidebug.ckpt.errors import one_line
from tuidebug.ckpt.formats.dcp import is_dcp_folder
from tuidebug.probe.observer import Observer
from tuidebug.probe.schedulers import scheduler_types as lr_scheduler_types
from tuidebug.units import fmt_bytes
from tuidebug.wire.checkpoint_messages import (
    MAX_DIFF_ROWS,
    CheckpointConfig,
    CheckpointDiff,
    CheckpointRestored,
    CheckpointSaved,
)
from tuidebug.wire.messages import Command, Notice, StepPoint

if TYPE_CHECKING:
    from tuidebug.ckpt.diff import StateDiff
    from tuidebug.ckpt.save import SaveResult
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")

SEND_WAIT = 0.5  # seconds a restore waits for its message to leave before the run goes on


def _names(prefix: str, objects: list[Any]) -> dict[str, Any]:
    """Stable names by discovery order: "optimizer", "optimizer2"... (as models are named)."""
    return {(prefix if i == 0 else f"{prefix}{i + 1}"): o for i, o in enumerate(objects)}


def diff_lines(d: StateDiff, limit: int = 40) -> list[str]:
    """A diff that blocks a restore, one line per problem (what the console shows)."""
    lines = [f"missing in the checkpoint: {k}" for k in d.missing]
    lines += [f"unexpected in the checkpoint: {k}" for k in d.unexpected]
    lines += [
        f"shape {m.key}: {list(m.a_shape)} saved, {list(m.b_shape)} live"
        for m in d.shape_mismatches
    ]
    lines += [f"dtype {m.key}: {m.a_dtype} saved, {m.b_dtype} live" for m in d.dtype_mismatches]
    lines += list(d.problems)
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


class CheckpointExtra(Protocol):
    """Another extension's state that a checkpoint carries in its metadata (the live
    hyperparameter changes and the script's tunables: probe/extensions/hparams.py)."""

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Entries for the metadata of a save being made now."""
        ...

    def before_restore(self) -> None:
        """A checkpoint that fits is about to be applied (note what is live now)."""
        ...

    def after_restore(self, metadata: Mapping[str, Any]) -> None:
        """It was applied; ``metadata`` is the checkpoint's (empty for foreign formats)."""
        ...


@dataclass
class FrameworkRestore:
    """A framework's own checkpoint, loaded and checked against its live trainer, ready to be
    applied: what an integration's ``framework_restorer`` returns (tuidebug/integrations/)."""

    step: int
    """The step the run is at once it is applied (the checkpoint's)."""
    apply: Callable[[], list[str]]
    """Puts it into the live trainer (training thread, at a boundary); returns more notes."""
    restored: list[str]
    """What goes back, one entry per part ("model weights", "1 LR scheduler(s)"...)."""
    notes: list[str] = field(default_factory=list)
    """What does not go back, and the fit check's notes."""


FrameworkRestorer = Callable[[str, bool], "FrameworkRestore | None"]
"""(path, unsafe) -> the checkpoint ready to apply, or None when ``path`` is not the
framework's kind (the generic restore takes it). Raises a ``CheckpointError`` (``DoesNotFit``
with the diff) to refuse, having changed nothing."""


class CheckpointsObserver(Observer):
    """Saves, restores and diffs for one probe."""

    def __init__(self, probe: Probe, options: Mapping[str, Any]) -> None:
        self.probe = probe
        folder = options.get("checkpoint_dir")
        if not folder and options.get("run_folder"):
            folder = str(Path(str(options["run_folder"])) / "checkpoints")
        self.folder: str | None = str(folder) if folder else None
        self.every = max(0, int(options.get("save_every") or 0))
        self.keep = max(0, int(options.get("keep") or 0)) or None
        self.pending_resume: str | None = str(options["resume"]) if options.get("resume") else None
        self._last_point: StepPoint | None = None
        self.framework_saver: Callable[[str, str], None] | None = None
        """Set by an integration (``tuidebug/integrations/``) while a framework's trainer runs:
        save now and ``--save-every`` then go through the framework's own checkpointing (a
        Lightning ``.ckpt``, a Hugging Face ``checkpoint-N``), which it resumes from. Called on
        the training thread with (folder, reason); the integration reports the outcome with
        :meth:`framework_saved`, at once or when the framework has written it."""
        self.framework_restorer: FrameworkRestorer | None = None
        """Set beside ``framework_saver``: a restore (and ``--resume``) of the framework's own
        checkpoint goes through the live trainer (its step counters, schedulers, precision
        plugin), see :class:`FrameworkRestore`."""
        self.extras: list[CheckpointExtra] = []
        """Other extensions' state saved in the metadata and given back at a restore."""
        self._seen_model = False
        self._seen_optimizer = False
        self.probe.send(
            CheckpointConfig(
                rank=probe.rank,
                step=probe.step,
                folder=self.folder or "",
                save_every=self.every,
                keep=self.keep or 0,
                resume=self.pending_resume or "",
            )
        )

    # --- observer hooks (the per-step cost is in on_boundary: two compares) -------------------

    def on_model(self, name: str, module: Any) -> None:
        self._seen_model = True
        self._maybe_resume_at_attach()

    def on_optimizer(self, optimizer: Any) -> None:
        self._seen_optimizer = True
        self._maybe_resume_at_attach()

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        self._last_point = point
        if self.pending_resume is not None:
            # No earlier moment came (no hook object): apply at the first boundary.
            path, self.pending_resume = self.pending_resume, None
            self.restore(path, kind="resume", discarded=step)
        elif self.every and step % self.every == 0:
            self.save("every")
            if self.probe.world_size > 1 and self.framework_saver is None:
                self._save_rank_rng(step)
        return None

    def _save_rank_rng(self, step: int) -> None:
        """A job's ``--save-every``: every rank writes its own generators beside the checkpoint
        of this step, as the supervisor has them do after a save now (rank_rng.py), so that
        either resumes exactly. Each rank on its own, at the same step: no collective, no
        message unless it failed (one notice per rank per save would flood the console)."""
        if self.folder is None:
            return
        from tuidebug.ckpt.save import default_name, rank_state_error
        from tuidebug.ckpt.sharded import sharded_name

        name = sharded_name(step) if self._sharded() else default_name(step)
        error = rank_state_error(
            Path(self.folder) / name,
            rank=self.probe.rank,
            world_size=self.probe.world_size,
            step=step,
        )
        if error:
            self._notice("error", f"rank {self.probe.rank}: RNG states not saved: {error}")

    # --- actions (training thread) ------------------------------------------------------------

    def save(self, reason: str) -> None:
        """Save the full training state now; the outcome is a message, never an exception."""
        probe = self.probe
        step = probe.step
        if self.framework_saver is not None:
            # The framework knows where its checkpoints go, and which ranks write: every rank
            # asks it (Lightning's save_checkpoint waits at a barrier for all of them).
            try:
                self.framework_saver(self.folder or "", reason)
            except Exception as error:  # a failed save is a message, not the end of the run
                self.framework_saved(self.folder or "", reason, step, error=one_line(error))
            return
        if self._sharded():
            self._save_sharded(reason)  # every rank writes its own shards
            return
        if probe.rank != 0:
            return  # ranks hold the same replicated state; rank 0 writes it once
        if self.folder is None:
            self._saved(self._no_folder(step, reason))
            return
        loss = self._step_loss(step)
        from tuidebug.ckpt.save import SaveResult

        try:
            from tuidebug.ckpt import save_now

            objects = self.collect()
            result = save_now(
                self.folder,
                models=objects["models"],
                optimizers=objects["optimizers"],
                schedulers=objects["schedulers"],
                scaler=objects["scaler"],
                loaders=objects["loaders"],
                step=step,
                epoch=objects["epoch"],
                metadata=self._save_metadata(reason, loss),
                keep=self.keep,
            )
        except Exception as error:  # a failed save is a message, not the end of the run
            result = SaveResult(ok=False, path=self.folder, error=one_line(error))
        self._saved(self._saved_message(step, reason, loss, result))

    def _save_metadata(self, reason: str, loss: float | None) -> dict[str, Any]:
        return {
            "loss": loss,
            "time": time.time(),
            "script": sys.argv[0] if sys.argv else "",
            "args": list(sys.argv[1:]),
            "reason": reason,
            **self._extra_metadata(),
        }

    def _step_loss(self, step: int) -> float | None:
        """The loss of ``step`` when its point is the last one seen (a save's metadata)."""
        point = self._last_point
        return point.loss if point is not None and point.step == step else None

    @staticmethod
    def _no_folder(step: int, reason: str) -> CheckpointSaved:
        return CheckpointSaved(
            step=step,
            ok=False,
            path="",
            reason=reason,
            error="no checkpoint folder (use --checkpoint-dir)",
        )

    @staticmethod
    def _saved_message(
        step: int, reason: str, loss: float | None, result: SaveResult
    ) -> CheckpointSaved:
        return CheckpointSaved(
            step=step,
            ok=result.ok,
            path=result.path,
            reason=reason,
            error=result.error,
            size=result.size,
            sha256=result.sha256,
            seconds=result.seconds,
            loss=loss,
            removed=list(result.removed),
        )

    def _sharded(self) -> bool:
        """A model under FSDP or with DTensor parameters (the same answer on every rank)."""
        from tuidebug.probe.sharding import is_sharded

        return is_sharded(self.probe.models().values())

    def _save_sharded(self, reason: str) -> None:
        """A save of every rank's shards (ckpt/sharded.py): collective, so every rank reaches
        its agreement step, whatever failed before; rank 0 reports the checkpoint."""
        from tuidebug.ckpt.save import SaveResult
        from tuidebug.ckpt.sharded import agree, save_sharded

        probe = self.probe
        step = probe.step
        if self.folder is None:  # the same on every rank: nobody enters a collective
            if probe.rank == 0:
                self._saved(self._no_folder(step, reason))
            return
        loss = self._step_loss(step)
        try:
            objects = self.collect()
            metadata = self._save_metadata(reason, loss)
        except Exception as error:
            agree(one_line(error))  # the others refuse with this rank's reason
            result = SaveResult(ok=False, path=self.folder, error=one_line(error))
        else:
            result = save_sharded(
                self.folder,
                models=objects["models"],
                optimizers=objects["optimizers"],
                schedulers=objects["schedulers"],
                scaler=objects["scaler"],
                loaders=objects["loaders"],
                step=step,
                epoch=objects["epoch"],
                metadata=metadata,
                keep=self.keep,
            )
        if probe.rank == 0:
            self._saved(self._saved_message(step, reason, loss, result))
        elif not result.ok:
            self._notice("error", f"rank {probe.rank}: shards not saved: {result.error}")

    def framework_folder(self, folder: str, framework: str) -> None:
        """Where the framework writes its own checkpoints while its trainer trains (the
        Trainer's ``output_dir``; the run's folder for Lightning): consoles list that folder."""
        self.probe.send(
            CheckpointConfig(
                rank=self.probe.rank,
                step=self.probe.step,
                folder=folder,
                save_every=self.every,
                keep=self.keep or 0,
                resume=self.pending_resume or "",
                framework=framework,
            )
        )

    def framework_saved(
        self, path: str, reason: str, step: int, *, error: str = "", seconds: float = 0.0
    ) -> None:
        """A framework saver's outcome: ``path`` (a file or a folder) written at ``step``, or
        ``error``. ``--keep`` does not prune these: the framework's own limit applies.
        Rank 0 reports for all."""
        if self.probe.rank != 0:
            return
        point = self._last_point
        loss = point.loss if point is not None and point.step == step else None
        size = 0
        target = Path(path)
        if not error:
            if target.is_file():
                size = target.stat().st_size
            elif target.is_dir():
                size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
            else:
                error = f"the framework wrote nothing at {path}"
        self._saved(
            CheckpointSaved(
                step=step,
                ok=not error,
                path=path,
                reason=reason,
                error=error,
                size=size,
                seconds=seconds,
                loss=loss,
            )
        )

    def restore(
        self, path: str, *, kind: str = "restore", unsafe: bool = False, discarded: int = 0
    ) -> bool:
        """Load ``path`` into the live objects and set the step back; False if refused."""
        probe = self.probe
        before = probe.step

        def refuse(
            error: str, problems: list[str] | None = None, notes: list[str] | None = None
        ) -> bool:
            self._restored(
                CheckpointRestored(
                    step=before,
                    ok=False,
                    path=path,
                    from_step=before,
                    kind=kind,
                    error=error,
                    problems=problems or [],
                    notes=notes or [],
                )
            )
            return False

        from tuidebug.ckpt import DoesNotFit, RestoreError, apply_training_state

        try:
            restorer = self.framework_restorer
            framework = restorer(path, unsafe) if restorer is not None else None
            if framework is not None:
                self._each_extra("before_restore")
                try:
                    more = framework.apply()
                except Exception as error:  # the check passed: this failed part way
                    raise RestoreError(
                        f"restore failed part way ({one_line(error)}); the live state may be mixed"
                    ) from error
                notes = [*framework.notes, *more]
                return self._applied(
                    path,
                    kind,
                    before,
                    framework.step,
                    framework.restored,
                    notes,
                    discarded,
                    {},
                    own_rng=False,  # the framework's checkpoint has every rank's
                )
            if self._sharded() or is_dcp_folder(Path(path)):
                return self._restore_sharded(path, kind, before, discarded, refuse)
            state = self._load(path, unsafe)
            objects = self.collect()
            if not objects["models"]:
                return refuse("no model seen yet: nothing to restore into")
            # A running iterator cannot be rewound: loader positions are restored only before
            # the loop started (--resume through tuidebug.attach), see the module docstring.
            loaders = objects["loaders"] if kind == "resume" and probe.step == 0 else None
            self._each_extra("before_restore")
            step = apply_training_state(
                state,
                models=objects["models"],
                optimizers=objects["optimizers"],
                schedulers=objects["schedulers"],
                scaler=objects["scaler"],
                loaders=loaders,
            )
        except DoesNotFit as error:  # raised before anything was changed
            return refuse(
                "the checkpoint does not fit the live model; nothing was changed",
                diff_lines(error.diff),
                list(error.diff.notes),
            )
        except Exception as error:  # CheckpointError subclasses, and anything else
            return refuse(one_line(error))
        if state.get("format") == "state_dict":
            step = before  # bare weights say nothing of the step
        restored = self._what(state, objects, loaders)
        notes = []
        if objects["loaders"] and not loaders:
            notes.append("data loaders keep their live position (a running epoch is not rewound)")
        metadata = state.get("metadata") or {}
        return self._applied(path, kind, before, step, restored, notes, discarded, metadata)

    def _restore_sharded(
        self,
        path: str,
        kind: str,
        before: int,
        discarded: int,
        refuse: Callable[[str, list[str] | None, list[str] | None], bool],
    ) -> bool:
        """Every rank's shards back (ckpt/sharded.py); collective like the save."""
        from tuidebug.ckpt import DoesNotFit
        from tuidebug.ckpt.sharded import agree, restore_sharded

        probe = self.probe
        try:
            objects = self.collect()
        except Exception as error:
            agree(one_line(error))
            return refuse(one_line(error), None, None)
        loaders = objects["loaders"] if kind == "resume" and probe.step == 0 else None
        self._each_extra("before_restore")
        try:
            state = restore_sharded(
                path,
                models=objects["models"],
                optimizers=objects["optimizers"],
                schedulers=objects["schedulers"],
                scaler=objects["scaler"],
                loaders=loaders,
            )
        except DoesNotFit as error:  # on every rank before anything was changed
            return refuse(
                "the checkpoint does not fit the live model; nothing was changed",
                diff_lines(error.diff),
                list(error.diff.notes),
            )
        except Exception as error:
            return refuse(one_line(error), None, None)
        restored = self._what(state, objects, loaders)
        notes = []
        if objects["loaders"] and not loaders:
            notes.append("data loaders keep their live position (a running epoch is not rewound)")
        metadata = state.get("metadata") or {}
        step = int(state.get("step") or 0)
        return self._applied(path, kind, before, step, restored, notes, discarded, metadata)

    def _applied(
        self,
        path: str,
        kind: str,
        before: int,
        step: int,
        restored: list[str],
        notes: list[str],
        discarded: int,
        metadata: Mapping[str, Any],
        own_rng: bool = True,
    ) -> bool:
        """A restore went in: the run is at ``step`` now; say so, then the extras' turn."""
        self.probe.step = step
        if own_rng and kind == "resume" and self.probe.world_size > 1:
            notes = [*notes, *self._own_rng(path)]
        self._restored(
            CheckpointRestored(
                step=step,
                ok=True,
                path=path,
                from_step=before,
                kind=kind,
                notes=notes,
                restored=restored,
                discarded=discarded,
            )
        )
        self._each_extra("after_restore", metadata)
        return True

    def _own_rng(self, path: str) -> list[str]:
        """A job's ``--resume``: this rank's own generators, from beside the checkpoint (the
        checkpoint holds rank 0's). A console's restore has the supervisor ask every rank
        instead, once all restored (supervisor/ranks.py). Returns the restore's notes."""
        from tuidebug.ckpt.rng import restore_rank_rng

        rank = self.probe.rank
        try:
            notes = restore_rank_rng(path, rank)
        except Exception as failure:
            return [f"rank {rank}: RNG states not restored: {one_line(failure)}"]
        if notes is None:
            return [f"rank {rank}: no RNG states of its own beside the checkpoint"]
        return [f"rank {rank}: its own RNG states restored", *notes]

    def diff(self, path: str, unsafe: bool = False) -> None:
        """Compare a checkpoint's model weights with the live model; send the sorted result."""
        try:
            from tuidebug.ckpt import diff_state_dicts
            from tuidebug.ckpt.diff import flatten_tensors

            saved = self._model_weights(path, unsafe)
            models = self.probe.models()
            if not models:
                raise RuntimeError("no model seen yet")
            if len(models) == 1:
                from tuidebug.ckpt.framework_state import fill_tied_weights

                model = next(iter(models.values()))
                fill_tied_weights(saved, model)  # a tensor saved once for two keys (HF's)
                live = flatten_tensors(model.state_dict())
            else:
                live = flatten_tensors({n: m.state_dict() for n, m in models.items()})
            d = diff_state_dicts(saved, live)
        except Exception as error:
            self.probe.send(
                CheckpointDiff(
                    rank=self.probe.rank,
                    step=self.probe.step,
                    path=path,
                    ok=False,
                    error=one_line(error),
                )
            )
            return
        # Largest change first; NaN (a non-finite tensor) first of all: it is the news.
        changes = sorted(d.changes, key=lambda c: (not math.isnan(c.rel_change), -c.rel_change))
        mismatches = [
            f"{m.key}: {list(m.a_shape)} {m.a_dtype} saved, {list(m.b_shape)} {m.b_dtype} live"
            for m in [*d.shape_mismatches, *d.dtype_mismatches]
        ]
        full = len(d.missing) + len(d.unexpected) + len(mismatches) + len(changes)
        message = CheckpointDiff(
            rank=self.probe.rank,
            step=self.probe.step,
            path=path,
            missing=d.missing[:MAX_DIFF_ROWS],
            unexpected=d.unexpected[:MAX_DIFF_ROWS],
            mismatches=mismatches[:MAX_DIFF_ROWS],
            changes=[(c.key, float(c.rel_change), int(c.numel)) for c in changes[:MAX_DIFF_ROWS]],
            notes=list(d.notes)[:20],
            compared=d.compared,
        )
        message.truncated = full - (
            len(message.missing)
            + len(message.unexpected)
            + len(message.mismatches)
            + len(message.changes)
        )
        self.probe.send(message)

    # --- finding the training state -----------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        """Models, optimizers, schedulers, scaler, loaders and epoch of the run, as of now."""
        import torch

        models = self.probe.models()
        optimizers = self.probe.optimizers()
        ours = {id(o) for o in optimizers}
        schedulers: list[Any] = []
        scalers: list[Any] = []
        loaders: list[Any] = []
        from tuidebug.ckpt import ResumableLoader

        scheduler_types = lr_scheduler_types()
        scaler_types = tuple(
            t
            for t in (
                getattr(getattr(torch, "amp", None), "GradScaler", None),
                getattr(torch.cuda.amp, "GradScaler", None),
            )
            if isinstance(t, type)
        )
        # A scan of the live objects, only at a save or restore (tens of ms): schedulers,
        # scalers and loaders are reached by no hook.
        for obj in gc.get_objects():
            kind = type(obj)  # not isinstance: it would ask proxies for __class__
            if issubclass(kind, scheduler_types):
                if id(getattr(obj, "optimizer", None)) in ours:
                    schedulers.append(obj)
            elif scaler_types and issubclass(kind, scaler_types):
                scalers.append(obj)
            elif issubclass(kind, ResumableLoader) or (
                kind.__name__ == "StatefulDataLoader" and hasattr(obj, "load_state_dict")
            ):
                loaders.append(obj)
        epoch = None
        if len(loaders) == 1 and isinstance(getattr(loaders[0], "epoch", None), int):
            epoch = loaders[0].epoch
        return {
            "models": models,
            "optimizers": _names("optimizer", optimizers),
            "schedulers": _names("scheduler", schedulers),
            # The scaler the run uses (the probe saw its scale/step: probe/amp.py) before any
            # other one alive (a disabled one, one of an earlier run in the process).
            "scaler": next(iter(self.probe.scalers()), scalers[0] if scalers else None),
            "loaders": {"train": loaders[0]} if len(loaders) == 1 else _names("loader", loaders),
            "epoch": epoch,
        }

    # --- internals ----------------------------------------------------------------------------

    def _maybe_resume_at_attach(self) -> None:
        """``--resume`` with the hook object: apply once attach named a model and an optimizer.

        Not when the optimizer was just found by the auto hooks inside its first ``step()``:
        that is mid-step; the first boundary comes right after and applies it there.
        """
        if self.pending_resume is None or not (self._seen_model and self._seen_optimizer):
            return
        if self.probe.step != 0 or _inside("on_optimizer_step"):
            return
        path, self.pending_resume = self.pending_resume, None
        self.restore(path, kind="resume")

    @staticmethod
    def _load(path: str, unsafe: bool) -> dict[str, Any]:
        from tuidebug.ckpt import UnreadableCheckpoint, load_training_state

        if Path(path).is_dir():  # no framework restorer took it (formats/hf.py, dcp.py)
            raise UnreadableCheckpoint(
                f"{Path(path).name}: a checkpoint folder is restored only into a live Hugging "
                "Face Trainer that is training in this run"
            )

        if not unsafe:
            return load_training_state(path)
        # Only after the console's explicit confirmation that names the risk.
        from tuidebug.ckpt import load_unsafe
        from tuidebug.ckpt.restore import normalize_training_state

        obj = load_unsafe(path, i_accept_code_execution=True)
        return normalize_training_state(obj, source=path)

    @staticmethod
    def _model_weights(path: str, unsafe: bool) -> dict[str, Any]:
        from tuidebug.ckpt import model_state

        if not unsafe:
            return model_state(path)
        from tuidebug.ckpt import load_unsafe
        from tuidebug.ckpt.diff import flatten_tensors
        from tuidebug.ckpt.restore import normalize_training_state

        models = normalize_training_state(
            load_unsafe(path, i_accept_code_execution=True), source=path
        )["models"]
        return flatten_tensors(next(iter(models.values())) if len(models) == 1 else models)

    @staticmethod
    def _what(
        state: Mapping[str, Any], objects: Mapping[str, Any], loaders: Mapping[str, Any] | None
    ) -> list[str]:
        done = [f"model {name}" for name in objects["models"]]
        if objects["optimizers"] and state.get("optimizers"):
            done.append(f"{len(objects['optimizers'])} optimizer(s)")
        if objects["schedulers"] and state.get("schedulers"):
            done.append(f"{len(objects['schedulers'])} scheduler(s)")
        if objects["scaler"] is not None and state.get("scaler") is not None:
            done.append("grad scaler")
        if loaders and state.get("loaders"):
            done.append("data position")
        if state.get("rng"):
            done.append("RNG states")
        return done

    def _extra_metadata(self) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for extra in self.extras:
            try:
                entries.update(extra.checkpoint_metadata())
            except Exception:  # another feature's failure must not fail the save
                log.exception("tuidebug: %s metadata failed", type(extra).__name__)
        return entries

    def _each_extra(self, method: str, *args: Any) -> None:
        for extra in self.extras:
            try:
                getattr(extra, method)(*args)
            except Exception:  # nor the restore
                log.exception("tuidebug: %s.%s failed", type(extra).__name__, method)

    def _saved(self, message: CheckpointSaved) -> None:
        message.rank = self.probe.rank
        self.probe.send(message)
        name = Path(message.path).name
        if message.ok:
            text = f"saved {name} (step {message.step:,}, {fmt_bytes(message.size)})"
            self._notice("info", text)
        else:
            self._notice("error", f"save failed: {message.error}")

    def _restored(self, message: CheckpointRestored) -> None:
        message.rank = self.probe.rank
        self.probe.send(message)
        name = Path(message.path).name
        verb = "resumed from" if message.kind == "resume" else "restored"
        if message.ok:
            # What went back and what did not, in the notice itself (a framework's restore
            # leaves the data loader's position and more: docs/checkpoints.md).
            text = f"{verb} {name}: now at step {message.step:,}"
            if message.restored:
                text += f"; restored {', '.join(message.restored)}"
            if message.notes:
                text += "; " + "; ".join(message.notes)
            self._notice("info", text)
        else:
            first = f" ({message.problems[0]})" if message.problems else ""
            self._notice("error", f"{verb} {name} refused: {message.error}{first}")
        self._wait_sent()

    def _notice(self, level: str, text: str) -> None:
        self.probe.send(Notice(rank=self.probe.rank, step=self.probe.step, level=level, text=text))

    def _wait_sent(self) -> None:
        """Let the restore's message leave before the next step's point is queued.

        The link sends queued points before queued messages; a point of the new branch that
        overtook the restore message would make the console see the step go back before the
        restore itself. Restores are rare: waiting a few ms for the I/O thread is fine.
        """
        queue = getattr(self.probe.link, "_messages", None)  # the socket link's outbox
        if queue is None:
            return
        deadline = time.monotonic() + SEND_WAIT
        while queue and time.monotonic() < deadline:
            time.sleep(0.002)


def _inside(function_name: str, depth: int = 12) -> bool:
    """Whether ``function_name`` is among the callers (checked once, at a resume)."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name == function_name:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def install(probe: Probe, options: dict[str, Any]) -> None:
    observer = CheckpointsObserver(probe, options)
    probe.add_observer(observer)

    def save(_command: Command) -> None:
        observer.save("manual")

    def restore(command: Command) -> None:
        path = command.args.get("path", "")
        observer.restore(path, unsafe=command.args.get("unsafe") == "1")

    def diff(command: Command) -> None:
        observer.diff(command.args.get("path", ""), unsafe=command.args.get("unsafe") == "1")

    probe.gate.add_action("ckpt-save", save)
    probe.gate.add_action("ckpt-restore", restore)
    probe.gate.add_action("ckpt-diff", diff)
