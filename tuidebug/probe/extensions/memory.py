"""Memory in the training process: the torch allocator's figures, optimizer-state bytes, the
batch shape, and the moment an allocation fails.

Cost rules (the probe's): ``on_boundary`` runs at every step, so it compares the time with the
next sample's time and returns; about once a second (``memory_interval``) it reads the caching
allocator's host-side counters (``torch.cuda.memory_stats``: no device sync) for the devices in
use, and only if CUDA is already initialised (never initialise it: a CPU run stays CPU-only and
gets nothing from here). Then, on the same sampled step, a one-shot forward pre-hook on each root
model notes the shapes the model is called with (the batch) and removes itself.

OOM forensics, as designed: the probe cannot hook the script's death (the bootstrap catches the
exception and sends ``ScriptError``; extensions get no error hook). So:
- the latest :class:`AllocatorStats` (with the batch shape) is always at the console already;
- where torch has it, the allocator's OOM observer
  (``torch._C._cuda_attach_out_of_memory_observer``) sends an :class:`OomMoment` at the failing
  allocation itself: device, bytes asked for, allocated and free then; it only queues a message
  (no torch call inside the allocator's callback);
- the console builds the report when a ``ScriptError`` says out of memory, adding the biggest
  layers by activation memory from the layers sampler's shapes.

Console commands: ``memory-reset-peak`` (torch.cuda.reset_peak_memory_stats on every device in
use; the peak since start is kept here across resets) and ``memory-snapshot`` (args: ``steps``,
default 3, at most ``MAX_SNAPSHOT_STEPS``; ``path``, a file, optional). It is a gate action, so
it runs on the training thread at a step boundary: allocation history is recorded from there
(``torch.cuda.memory._record_memory_history``, Python stacks) for exactly the next K steps; at
the K-th boundary the snapshot is taken, recording stops (``enabled=None``: it ends by itself,
or when the script ends), the pickle is written to ``<run folder>/memory/snapshot-<first>-
<last>-rank<R>.pickle`` (what ``_dump_snapshot`` writes, and https://pytorch.org/memory_viz
opens) and a ``MemorySnapshotResult`` goes to the console with the top allocation sites
(``probe/memory_sites.py``). Without CUDA in the process the answer is the same message with a
calm ``unavailable`` reason, and nothing is recorded. Recording history costs a Python stack
per allocation while it runs, and taking the snapshot costs time at the last boundary (the
result says how much); it changes nothing the training computes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import sysconfig
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuidebug.probe.memory_sites import summarize_snapshot
from tuidebug.probe.observer import Observer
from tuidebug.wire.gpu_messages import (
    AllocatorStats,
    DeviceMemory,
    MemorySnapshotResult,
    MemorySnapshotStarted,
    OomMoment,
    ParamMemory,
)
from tuidebug.wire.messages import Command, Notice, StepPoint

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")

HISTORY_ENTRIES = 100_000  # allocation events kept by _record_memory_history (the viewer's default)
DEFAULT_SNAPSHOT_STEPS = 3
MAX_SNAPSHOT_STEPS = 50  # a few KB of stack per allocation: more steps make a huge pickle
NO_CUDA = "CUDA is not initialised in this process (a CPU run?): no CUDA memory to snapshot"


def _describe_batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The shapes of the tensors a model is called with: ``(64×3×32×32, 64)``."""
    import torch

    def one(obj: Any, depth: int = 0) -> str | None:
        if isinstance(obj, torch.Tensor):
            return "×".join(map(str, obj.shape)) if obj.dim() else "()"
        if depth < 2 and isinstance(obj, (tuple, list)):
            inner = [s for s in (one(o, depth + 1) for o in obj[:6]) if s]
            return f"({', '.join(inner)})" if inner else None
        if depth < 2 and isinstance(obj, dict):
            inner = [f"{k}: {s}" for k, v in list(obj.items())[:6] if (s := one(v, depth + 1))]
            return "{" + ", ".join(inner) + "}" if inner else None
        return None

    parts = [s for s in (one(a) for a in args[:6]) if s]
    parts += [f"{k}={s}" for k, v in list(kwargs.items())[:6] if (s := one(v))]
    return "(" + ", ".join(parts) + ")"


class MemoryObserver(Observer):
    """Samples allocator figures about once per ``interval`` seconds while CUDA is initialised."""

    def __init__(self, probe: Probe, interval: float = 1.0, folder: str | None = None) -> None:
        self.probe = probe
        self.interval = interval
        self.folder = folder  # the run folder: snapshots go to its memory/ (None: the cwd)
        self._left = 0  # steps of allocation history still to record (0: not recording)
        self._first = 0
        self._started = 0.0
        self._path = ""  # where the snapshot goes, when the command named a file
        self._next = 0.0
        self._models: list[weakref.ref[Any]] = []
        self._optimizers: list[weakref.ref[Any]] = []
        self._batch = ""
        self._batch_hooks: list[Any] = []
        self._devices: set[int] = set()
        self._peak: dict[int, int] = {}  # peak since start, across resets
        self._totals: dict[int, int] = {}
        self._oom_attached = False
        self._state_sent = -1  # how many parameter tensors had optimizer state when last sent

    # --- observer hooks ---------------------------------------------------------------------

    def on_model(self, name: str, module: Any) -> None:
        self._models.append(weakref.ref(module))

    def on_optimizer(self, optimizer: Any) -> None:
        self._optimizers.append(weakref.ref(optimizer))

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        if self._left:  # a snapshot is recording: count its steps down
            self._snapshot_step(step, now)
        if now < self._next:  # every step lands here: an int test, a float compare, nothing else
            return None
        self._next = now + self.interval
        self._maybe_send_param_memory(step)
        if not _cuda_ready():
            return None
        if not self._oom_attached:
            self._attach_oom_observer()
        self.send_stats(step)
        self._arm_batch_hook()
        return None

    def close(self) -> None:
        self._disarm_batch_hook()
        if self._left:  # the script ends while recording: the snapshot has the steps it got
            self._left = 0
            self._finish_snapshot(self.probe.step, time.perf_counter())

    # --- allocator figures ------------------------------------------------------------------

    def read_devices(self) -> list[DeviceMemory]:
        import torch

        out = []
        for device in range(torch.cuda.device_count()):
            # One stats dict per device (memory_allocated() etc. would each build it again).
            stats = torch.cuda.memory_stats(device)
            reserved = int(stats.get("reserved_bytes.all.current", 0))
            if not reserved and device not in self._devices:
                continue  # a device this process never allocated on: do not list it
            self._devices.add(device)
            peak_reset = int(stats.get("allocated_bytes.all.peak", 0))
            self._peak[device] = max(self._peak.get(device, 0), peak_reset)
            if device not in self._totals:
                self._totals[device] = int(torch.cuda.get_device_properties(device).total_memory)
            out.append(
                DeviceMemory(
                    device=device,
                    allocated=int(stats.get("allocated_bytes.all.current", 0)),
                    reserved=reserved,
                    peak=self._peak[device],
                    peak_since_reset=peak_reset,
                    total=self._totals[device],
                )
            )
        return out

    def send_stats(self, step: int) -> None:
        probe = self.probe
        probe.send(
            AllocatorStats(
                rank=probe.rank,
                step=step,
                devices=self.read_devices(),
                pid=probe.pid,
                time=time.time(),
                batch=self._batch,
            )
        )

    def reset_peak(self, _command: Command) -> None:
        if not _cuda_ready():
            self._notice("info", "no CUDA memory in use: no peak to reset")
            return
        import torch

        self.read_devices()  # fold the current peaks into the peak since start first
        for device in sorted(self._devices):
            torch.cuda.reset_peak_memory_stats(device)
        self.send_stats(self.probe.step)
        self._notice("info", "peak memory reset (the peak since start is kept)")

    # --- memory snapshot --------------------------------------------------------------------

    def snapshot(self, command: Command) -> None:
        """The ``memory-snapshot`` action: record the next K steps' allocations, then dump."""
        try:
            steps = int(command.args.get("steps", DEFAULT_SNAPSHOT_STEPS))
        except ValueError:
            steps = DEFAULT_SNAPSHOT_STEPS
        steps = max(1, min(MAX_SNAPSHOT_STEPS, steps))
        if self._left:
            self._notice("warning", f"a memory snapshot is recording ({self._left} steps left)")
            return
        self._first = self.probe.step  # nothing recorded (yet): the answer names this step
        if not _cuda_ready():
            self._send_snapshot(unavailable=NO_CUDA)
            return
        import torch

        try:
            # Python stacks only (C++ unwinding costs far more per allocation); a fresh history,
            # so the trace is these K steps and nothing older.
            torch.cuda.memory._record_memory_history(
                enabled="all",
                context="all",
                stacks="python",
                max_entries=HISTORY_ENTRIES,
                clear_history=True,
            )
        except Exception as error:  # an odd build: the run matters more than the snapshot
            self._send_snapshot(error=f"allocation history did not start: {error!r}")
            return
        self._first = self.probe.step + 1
        self._left = steps
        self._path = str(command.args.get("path") or "")
        self._started = time.perf_counter()
        self.probe.send(
            MemorySnapshotStarted(rank=self.probe.rank, step=self.probe.step, steps=steps)
        )

    def _snapshot_step(self, step: int, now: float) -> None:
        self._left -= 1
        if not self._left:
            self._finish_snapshot(step, now)

    def _finish_snapshot(self, step: int, now: float) -> None:
        """Take the snapshot, stop recording, write the pickle, send the top sites."""
        import torch

        wall = now - self._started
        taking = time.perf_counter()
        try:
            # _dump_snapshot is exactly _snapshot() + pickle.dump: done here in two steps, so the
            # one dict read from the allocator is both written and summarized.
            data = torch.cuda.memory._snapshot()
        except Exception as error:
            self._stop_recording()
            self._send_snapshot(step=step, error=f"the snapshot failed: {error!r}")
            return
        self._stop_recording()
        try:
            path = self._snapshot_path(step)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(data, f)
            os.replace(tmp, path)  # a reader never sees half a snapshot
            summary = summarize_snapshot(
                data, internal=_internal_folders(torch), own=[_own_folder()], cwd=os.getcwd()
            )
            traces = data.get("device_traces") or ()
            self._send_snapshot(
                step=step,
                path=str(path),
                file_bytes=path.stat().st_size,
                **summary.fields(),
                truncated=any(len(t) >= HISTORY_ENTRIES for t in traces),
                wall=wall,
                overhead=time.perf_counter() - taking,
            )
        except Exception as error:
            self._send_snapshot(step=step, error=f"writing the snapshot failed: {error!r}")

    def _snapshot_path(self, step: int) -> Path:
        if self._path:
            return Path(self._path)
        folder = Path(self.folder) / "memory" if self.folder else Path.cwd()
        return folder / f"snapshot-{self._first}-{step}-rank{self.probe.rank}.pickle"

    def _stop_recording(self) -> None:
        import torch

        try:
            torch.cuda.memory._record_memory_history(enabled=None)
        except Exception:  # it was started by us a few steps ago: failing now is odd, not fatal
            log.warning("tuidebug: stopping the allocation history failed", exc_info=True)

    def _send_snapshot(self, step: int | None = None, **fields: Any) -> None:
        self.probe.send(
            MemorySnapshotResult(
                rank=self.probe.rank,
                step=self.probe.step if step is None else step,
                first=self._first,
                **fields,
            )
        )

    # --- OOM observer -----------------------------------------------------------------------

    def _attach_oom_observer(self) -> None:
        self._oom_attached = True
        import torch

        attach = getattr(torch._C, "_cuda_attach_out_of_memory_observer", None)
        if attach is None:
            return
        probe = self.probe

        def on_oom(device: int, alloc: int, device_alloc: int, device_free: int) -> None:
            # Inside the allocator: no torch call here, only queue a message.
            with contextlib.suppress(Exception):
                probe.send(
                    OomMoment(
                        rank=probe.rank,
                        step=probe.step,
                        device=int(device),
                        requested=int(alloc),
                        device_allocated=int(device_alloc),
                        device_free=int(device_free),
                    )
                )

        # An older or odd build may refuse it: the report then does without the exact moment.
        with contextlib.suppress(Exception):
            attach(on_oom)

    # --- batch shape ------------------------------------------------------------------------

    def _arm_batch_hook(self) -> None:
        """Note the next call's input shapes of each root model, once (then the hook goes)."""
        if self._batch_hooks:
            return
        for ref in self._models:
            model = ref()
            if model is None:
                continue

            def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                try:
                    self._batch = _describe_batch(args, kwargs)
                finally:
                    self._disarm_batch_hook()

            self._batch_hooks.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))

    def _disarm_batch_hook(self) -> None:
        hooks, self._batch_hooks = self._batch_hooks, []
        for handle in hooks:
            handle.remove()

    # --- parameter, gradient and optimizer-state bytes ---------------------------------------

    def param_memory(self) -> ParamMemory:
        """Bytes per parameter tensor, named as the layers sampler names them.

        Sizes come from tensor metadata (numel × element size): nothing is read from a device.
        """
        import torch

        def nbytes(t: Any) -> int:
            return int(t.numel() * t.element_size()) if isinstance(t, torch.Tensor) else 0

        state: dict[int, int] = {}
        classes = []
        for ref in self._optimizers:
            optimizer = ref()
            if optimizer is None:
                continue
            classes.append(type(optimizer).__name__)
            for param, values in list(optimizer.state.items()):
                if isinstance(values, dict):
                    state[id(param)] = sum(nbytes(v) for v in values.values())
        names: list[str] = []
        params: list[int] = []
        grads: list[int] = []
        states: list[int] = []
        seen: set[int] = set()
        for ref in self._models:
            model = ref()
            if model is None:
                continue
            for name, param in model.named_parameters():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                names.append(name)
                params.append(nbytes(param))
                grads.append(nbytes(param.grad))
                states.append(state.get(id(param), 0))
        return ParamMemory(
            rank=self.probe.rank,
            step=self.probe.step,
            names=names,
            params=params,
            grads=grads,
            state=states,
            optimizer=", ".join(dict.fromkeys(classes)),
        )

    def _maybe_send_param_memory(self, step: int) -> None:
        # Sent after the first step (gradients exist by then) and when optimizer state grows;
        # the check is a dict length per optimizer, so it stays cheap at 1 Hz.
        count = sum(len(o.state) for o in (r() for r in self._optimizers) if o is not None)
        if count == self._state_sent or not self._models:
            return
        self._state_sent = count
        message = self.param_memory()
        message.step = step
        if message.names:
            self.probe.send(message)

    def _notice(self, level: str, text: str) -> None:
        self.probe.send(Notice(rank=self.probe.rank, step=self.probe.step, level=level, text=text))


def _cuda_ready() -> bool:
    """CUDA initialised by the script (never initialise it ourselves)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:
        return False


def _internal_folders(torch: Any) -> list[str]:
    """Folders whose frames are not an allocation site: torch's package, the standard library."""
    paths = sysconfig.get_paths()
    return [os.path.dirname(torch.__file__), paths["stdlib"], paths["platstdlib"]]


def _own_folder() -> str:
    """The tuidebug package (the probe's wrappers and hooks), spelled as its frames are."""
    import tuidebug

    return os.path.dirname(tuidebug.__file__)


def install(probe: Probe, options: dict[str, Any]) -> None:
    folder = options.get("run_folder")
    observer = MemoryObserver(
        probe,
        float(options.get("memory_interval", 1.0) or 1.0),
        folder if isinstance(folder, str) and os.path.isdir(folder) else None,
    )
    probe.add_observer(observer)
    probe.gate.add_action("memory-reset-peak", observer.reset_peak)
    probe.gate.add_action("memory-snapshot", observer.snapshot)
