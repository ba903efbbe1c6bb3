"""Profiler capture on demand: the next K steps under ``torch.profiler``, a Chrome trace in the
run folder, and the top operators by self time for the console (issue 18, item 2).

Console command ``profile`` (args: ``steps``, default 5, at most ``MAX_STEPS``). It is a gate
action, so it runs on the training thread at a step boundary: the capture starts there and
covers exactly the next K steps; at the K-th boundary the profiler stops, the trace is written
to ``<run folder>/profiles/profile-<first>-<last>.json`` (``-rank<R>`` before ``.json`` in a
job: every rank captures) and a ``ProfileResult`` is sent (the top operators by self time, and
each captured step's phases from the step-time breakdown). The
capture ends by itself at the K-th step, or when the script ends. A profiler records, it
changes nothing that training computes.

While it runs, the phases are marked in the trace (``record_function`` ranges "tuidebug: data",
"tuidebug: forward"... and one per step "tuidebug: step N") and, on CUDA, as ``torch.cuda.nvtx``
ranges for Nsight. Nothing here raises into the script: a failure is a ``ProfileResult`` with an
``error``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.profiler import record_function

from tuidebug.probe.observer import Observer
from tuidebug.wire.messages import Command, Notice, StepPoint
from tuidebug.wire.phase_messages import ProfileOp, ProfileResult, ProfileStarted

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")

DEFAULT_STEPS = 5
MAX_STEPS = 100  # a trace of more steps gets too large to write at a boundary
TOP_OPS = 25
OWN_PREFIX = "tuidebug: "  # our own ranges: in the trace, not in the operator table


def make_profiler(cuda: bool) -> Any:
    """The capture's profiler: CPU (and CUDA) activities, shapes and memory, no stacks."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    return profile(activities=activities, record_shapes=True, profile_memory=True)


class _Marks:
    """Phase ranges while a capture runs: ``record_function`` in the trace, NVTX on CUDA."""

    def __init__(self, nvtx: Any) -> None:
        self._open: list[Any] = []
        self._nvtx = nvtx

    def push(self, name: str) -> None:
        mark = record_function(name)
        mark.__enter__()
        self._open.append(mark)
        if self._nvtx is not None:
            self._nvtx.range_push(name)

    def pop(self) -> None:
        if self._open:  # a phase that opened before the capture has nothing to close
            self._open.pop().__exit__(None, None, None)
            if self._nvtx is not None:
                self._nvtx.range_pop()

    def close_all(self) -> None:
        while self._open:
            self.pop()


class ProfileObserver(Observer):
    """Runs one capture at a time for one probe."""

    def __init__(self, probe: Probe, folder: str | None) -> None:
        self.probe = probe
        self.folder = folder
        self._profiler: Any = None
        self._marks: _Marks | None = None
        self._left = 0
        self._first = 0
        self._started = 0.0
        self._timeline: list[list[float]] = []
        self._cuda = False

    # --- the gate action (training thread, at a boundary) --------------------------------------

    def request(self, command: Command) -> None:
        try:
            steps = int(command.args.get("steps", DEFAULT_STEPS))
        except ValueError:
            steps = DEFAULT_STEPS
        steps = max(1, min(MAX_STEPS, steps))
        if self._profiler is not None:
            self._notice("warning", f"a profile capture is running ({self._left} steps left)")
            return
        try:
            self._start(steps)
        except Exception as error:  # the run matters more than the capture
            self._abandon()
            self._send_result(error=f"the profiler did not start: {error!r}")

    def _start(self, steps: int) -> None:
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        profiler = make_profiler(self._cuda)
        profiler.start()
        self._profiler = profiler
        self._left = steps
        self._first = self.probe.step + 1
        self._timeline = []
        self._marks = _Marks(torch.cuda.nvtx if self._cuda else None)
        phases = self.probe.phases
        if phases is not None:
            phases.marks = self._marks
            phases.capture = self._on_step
            phases.set_marking()
        self._marks.push(f"{OWN_PREFIX}step {self._first}")
        self._started = time.perf_counter()
        self.probe.send(
            ProfileStarted(
                rank=self.probe.rank,
                step=self.probe.step,
                steps=steps,
                activities=["cpu", "cuda"] if self._cuda else ["cpu"],
            )
        )

    # --- observer hooks ------------------------------------------------------------------------

    def _on_step(self, step: int, figures: tuple[float, ...]) -> None:
        """The breakdown's figures of a captured step: (step, total, data, fwd, bwd, opt)."""
        _, total, data, forward, backward, optimizer = figures
        other = max(0.0, total - data - forward - backward - optimizer)
        self._timeline.append([data, forward, backward, optimizer, other, total])

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        if self._profiler is None:
            return None
        self._left -= 1
        try:
            if self._left <= 0:
                self._finish(step, now)
            elif self._marks is not None:
                self._marks.pop()
                self._marks.push(f"{OWN_PREFIX}step {step + 1}")
        except Exception as error:
            self._abandon()
            self._send_result(step=step, error=f"the capture failed: {error!r}")
        return None

    def close(self) -> None:
        """The script ends: a capture still running stops with the steps it has."""
        if self._profiler is not None:
            try:
                self._finish(self.probe.step, time.perf_counter())
            except Exception as error:
                self._abandon()
                log.warning("tuidebug: the profile capture failed at the end: %r", error)

    # --- internals -----------------------------------------------------------------------------

    def _finish(self, step: int, now: float) -> None:
        wall = now - self._started
        profiler = self._profiler
        stopping = time.perf_counter()
        self._detach_marks()
        self._profiler = None
        profiler.stop()
        folder = Path(self.folder or tempfile.mkdtemp(prefix="tuidebug-profile-"))
        folder.mkdir(parents=True, exist_ok=True)
        # Every rank of a job captures the same steps into the same run folder: one file each.
        probe = self.probe
        rank = f"-rank{probe.rank}" if probe.world_size > 1 else ""
        path = folder / f"profile-{self._first}-{step}{rank}.json"
        tmp = path.with_suffix(".json.tmp")
        profiler.export_chrome_trace(str(tmp))
        os.replace(tmp, path)  # a reader never sees half a trace
        ops, sort = top_ops(profiler.key_averages(group_by_input_shape=True), self._cuda)
        self._send_result(
            step=step,
            trace=str(path),
            trace_bytes=path.stat().st_size,
            ops=ops,
            sort=sort,
            timeline=self._timeline,
            wall=wall,
            overhead=time.perf_counter() - stopping,
        )

    def _detach_marks(self) -> None:
        phases = self.probe.phases
        if phases is not None and phases.marks is self._marks:
            phases.marks = None
            phases.capture = None
            phases.set_marking()
        if self._marks is not None:
            self._marks.close_all()
            self._marks = None

    def _abandon(self) -> None:
        profiler, self._profiler = self._profiler, None
        try:
            self._detach_marks()
            if profiler is not None:
                profiler.stop()
        except Exception:  # already failing: leave the run alone
            log.debug("tuidebug: stopping a failed profile capture failed", exc_info=True)

    def _send_result(self, step: int | None = None, **fields: Any) -> None:
        self.probe.send(
            ProfileResult(
                rank=self.probe.rank,
                step=self.probe.step if step is None else step,
                first=self._first,
                **fields,
            )
        )

    def _notice(self, level: str, text: str) -> None:
        self.probe.send(Notice(rank=self.probe.rank, step=self.probe.step, level=level, text=text))


def top_ops(averages: Any, cuda: bool, limit: int = TOP_OPS) -> tuple[list[ProfileOp], str]:
    """The operators of ``key_averages(group_by_input_shape=True)`` merged per name (the
    heaviest shapes kept as text), sorted by self device time on CUDA, else self CPU time."""
    merged: dict[str, ProfileOp] = {}
    shapes: dict[str, list[tuple[float, str]]] = {}
    for event in averages:
        name = event.key
        if name.startswith(OWN_PREFIX) or name.startswith("ProfilerStep"):
            continue
        self_cpu = float(event.self_cpu_time_total)
        self_device = float(getattr(event, "self_device_time_total", 0.0) or 0.0)
        op = merged.get(name)
        if op is None:
            op = merged[name] = ProfileOp(name, 0, 0.0, 0.0, 0.0)
        op.calls += int(event.count)
        op.self_cpu += self_cpu
        op.cpu_total += float(event.cpu_time_total)
        op.self_device += self_device
        text = str(event.input_shapes) if event.input_shapes else ""
        if text and text != "[]":
            shapes.setdefault(name, []).append((self_device if cuda else self_cpu, text))
    sort = "self_device" if cuda else "self_cpu"
    rows = sorted(merged.values(), key=lambda op: getattr(op, sort), reverse=True)[:limit]
    for op in rows:
        heaviest = sorted(shapes.get(op.name, ()), reverse=True)
        op.shapes = heaviest[0][1][:200] if heaviest else ""
    return rows, sort


def install(probe: Probe, options: dict[str, Any]) -> None:
    run_folder = options.get("run_folder")
    folder = str(Path(str(run_folder)) / "profiles") if run_folder else None
    observer = ProfileObserver(probe, folder)
    probe.add_observer(observer)
    probe.gate.add_action("profile", observer.request)
