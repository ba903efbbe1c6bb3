"""Check the GPU panel's numbers on a machine with a real NVIDIA GPU. Not a pytest test.

    python tests/gpu/check_gpu_panel.py [--device N] [--no-oom]

What it does, printing a report as it goes:

1. polls once with :class:`tuidebug.gpu.poller.GpuPoller` and compares every GPU with
   ``nvidia-smi --query-gpu=... --format=csv`` (memory total exactly, memory used, temperature
   and power within a tolerance, since the two reads are not at the same instant);
2. compares the chosen GPU with ``torch.cuda.mem_get_info`` (total and free);
3. allocates a known amount (1 GiB) and checks the delta seen by ``torch.cuda.memory_allocated``
   (exact) and by the poller (NVML, at least the amount, at most a little more), and that the
   poller lists this process on the GPU;
4. allocates until ``torch.cuda.OutOfMemoryError``, catches it, polls at that moment, frees
   everything and checks that the memory came back (skip with ``--no-oom`` on a shared GPU);
5. prints the panel itself, at 80 columns, compact and detailed.

Exit status: 0 when every check passes, and also when there is no GPU here (it says so and
stops); 1 when a check fails. Importing this file does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Runnable from a checkout without installing the package.
if importlib.util.find_spec("tuidebug") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tuidebug.gpu.nvml import Nvml
from tuidebug.gpu.poller import GpuPoller
from tuidebug.gpu.snapshot import GpuDevice, GpuSnapshot

MIB = 1 << 20
GIB = 1 << 30

# The two sides read at different instants (and nvidia-smi rounds to MiB), hence tolerances.
MEMORY_TOLERANCE = 64 * MIB
TEMPERATURE_TOLERANCE = 3  # °C
POWER_TOLERANCE = 0.25  # relative; power moves fast and nvidia-smi may average
ALLOCATION = 1 * GIB

SMI_FIELDS = [
    "index",
    "uuid",
    "name",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
    "power.limit",
]


@dataclass
class Report:
    failures: int = 0
    lines: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.emit(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")
        if not ok:
            self.failures += 1
        return ok

    def note(self, name: str, detail: str) -> None:
        self.emit(f"[NOTE] {name}: {detail}")

    def emit(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def nvidia_smi() -> list[dict[str, str]] | str:
    """nvidia-smi's rows, or why there are none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "nvidia-smi is not on PATH"
    cmd = [exe, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return f"nvidia-smi failed: {exc}"
    rows = csv.reader(io.StringIO(out), skipinitialspace=True)
    return [dict(zip(SMI_FIELDS, (v.strip() for v in row), strict=True)) for row in rows if row]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def compare_with_smi(report: Report, snap: GpuSnapshot) -> None:
    rows = nvidia_smi()
    if isinstance(rows, str):
        report.note("nvidia-smi", rows)
        return
    report.check(
        "nvidia-smi GPU count",
        len(rows) == len(snap.devices),
        f"nvidia-smi {len(rows)}, poller {len(snap.devices)}",
    )
    by_uuid = {d.uuid: d for d in snap.devices}
    for row in rows:
        dev = by_uuid.get(row["uuid"])
        tag = f"GPU {row['index']}"
        if not report.check(f"{tag} found by uuid", dev is not None, row["uuid"]):
            continue
        assert dev is not None
        report.check(f"{tag} name", dev.name == row["name"], f"{dev.name!r} vs {row['name']!r}")
        smi_total = _number(row["memory.total"])
        if smi_total is not None and dev.memory_total is not None:
            report.check(
                f"{tag} memory total",
                abs(dev.memory_total // MIB - int(smi_total)) <= 1,
                f"poller {dev.memory_total // MIB} MiB, nvidia-smi {smi_total:.0f} MiB",
            )
        smi_used = _number(row["memory.used"])
        if smi_used is not None and dev.memory_used is not None:
            diff = abs(dev.memory_used - smi_used * MIB)
            report.check(
                f"{tag} memory used",
                diff <= MEMORY_TOLERANCE,
                f"poller {dev.memory_used / MIB:.0f} MiB, nvidia-smi {smi_used:.0f} MiB",
            )
        smi_temp = _number(row["temperature.gpu"])
        if smi_temp is not None and dev.temperature is not None:
            report.check(
                f"{tag} temperature",
                abs(dev.temperature - smi_temp) <= TEMPERATURE_TOLERANCE,
                f"poller {dev.temperature}°C, nvidia-smi {smi_temp:.0f}°C",
            )
        smi_power = _number(row["power.draw"])
        if smi_power is not None and dev.power_w is not None:
            ok = abs(dev.power_w - smi_power) <= max(15.0, POWER_TOLERANCE * smi_power)
            # Power is too jumpy to fail on: a mismatch is reported, not counted.
            report.note(
                f"{tag} power{'' if ok else ' (differs)'}",
                f"poller {dev.power_w:.0f} W, nvidia-smi {smi_power:.0f} W",
            )
        smi_limit = _number(row["power.limit"])
        if smi_limit is not None and dev.power_limit_w is not None:
            report.check(
                f"{tag} power limit",
                abs(dev.power_limit_w - smi_limit) <= 1.0,
                f"poller {dev.power_limit_w:.0f} W, nvidia-smi {smi_limit:.0f} W",
            )
        report.note(
            f"{tag} utilisation", f"poller {dev.utilization}%, nvidia-smi {row['utilization.gpu']}%"
        )


def nvml_device_for(torch: Any, cuda_index: int, snap: GpuSnapshot) -> GpuDevice | None:
    """The NVML device that torch's ``cuda:N`` is: CUDA_VISIBLE_DEVICES can renumber them."""
    props = torch.cuda.get_device_properties(cuda_index)
    uuid = str(getattr(props, "uuid", "") or "")
    for dev in snap.devices:
        if uuid and dev.uuid.endswith(uuid):
            return dev
    return snap.devices[cuda_index] if cuda_index < len(snap.devices) else None


def used_now(poller: GpuPoller, uuid: str) -> tuple[GpuSnapshot, GpuDevice | None]:
    snap = poller.poll()
    return snap, next((d for d in snap.devices if d.uuid == uuid), None)


def check_torch(
    report: Report, poller: GpuPoller, snap: GpuSnapshot, cuda_index: int, oom: bool
) -> None:
    try:
        import torch
    except ImportError as exc:
        report.note("torch", f"not importable ({exc}): torch checks skipped")
        return
    if not torch.cuda.is_available():
        report.note("torch", "torch.cuda.is_available() is False: torch checks skipped")
        return
    device = torch.device("cuda", cuda_index)
    torch.cuda.init()
    # Create the CUDA context first, so the allocation below is measured without it.
    torch.zeros(1, device=device)
    torch.cuda.synchronize(device)
    snap = poller.poll()
    dev = nvml_device_for(torch, cuda_index, snap)
    if not report.check("torch device matched to NVML", dev is not None, f"cuda:{cuda_index}"):
        return
    assert dev is not None
    report.note("device", f"cuda:{cuda_index} is NVML GPU {dev.index} {dev.name} ({dev.uuid})")

    free, total = torch.cuda.mem_get_info(device)
    report.check(
        "mem_get_info total",
        dev.memory_total is not None
        and abs(total - dev.memory_total) <= max(MEMORY_TOLERANCE, total // 100),
        f"torch {total / MIB:.0f} MiB, NVML {(dev.memory_total or 0) / MIB:.0f} MiB",
    )
    if dev.memory_total is not None and dev.memory_used is not None:
        nvml_free = dev.memory_total - dev.memory_used
        # cudaMemGetInfo's free excludes memory NVML's v2 "used" does not count (reserved).
        report.check(
            "mem_get_info free",
            abs(free - nvml_free) <= max(MEMORY_TOLERANCE, total // 50),
            f"torch {free / MIB:.0f} MiB, NVML {nvml_free / MIB:.0f} MiB",
        )

    # A known allocation: the allocator's figure is exact; NVML sees at least as much
    # (the caching allocator rounds up to its block sizes) and not much more.
    before_alloc = torch.cuda.memory_allocated(device)
    _, before = used_now(poller, dev.uuid)
    block = torch.empty(ALLOCATION // 4, dtype=torch.float32, device=device)
    torch.cuda.synchronize(device)
    after_alloc = torch.cuda.memory_allocated(device)
    snap_after, after = used_now(poller, dev.uuid)
    report.check(
        "memory_allocated delta",
        after_alloc - before_alloc == ALLOCATION,
        f"{(after_alloc - before_alloc) / MIB:.1f} MiB for {ALLOCATION / MIB:.0f} MiB",
    )
    if before and after and before.memory_used is not None and after.memory_used is not None:
        delta = after.memory_used - before.memory_used
        report.check(
            "NVML used delta",
            ALLOCATION - MEMORY_TOLERANCE <= delta <= ALLOCATION + MEMORY_TOLERANCE,
            f"{delta / MIB:.0f} MiB for {ALLOCATION / MIB:.0f} MiB",
        )
    procs = after.processes if after else []
    mine = [p for p in procs if p.pid == os.getpid()]
    if mine:
        report.check(
            "this process listed on the GPU",
            True,
            f"pid {os.getpid()} uses {(mine[0].used_memory or 0) / MIB:.0f} MiB",
        )
    else:
        # In a container NVML reports host pids, which differ from ours: a note, not a failure.
        report.note(
            "this process listed on the GPU",
            f"pid {os.getpid()} not among {[p.pid for p in procs]} (pid namespace?)",
        )
    observer = check_memory_extension(report, torch, device)
    del block
    torch.cuda.empty_cache()

    if oom:
        exercise_oom(report, poller, torch, device, dev.uuid, observer)
    print_panel(snap_after, own_pids={os.getpid()})


def check_memory_extension(report: Report, torch: Any, device: Any) -> Any:
    """The probe's memory extension (what the GPU screen's allocator figures come from)."""
    import tempfile
    from types import SimpleNamespace

    from tuidebug.probe.extensions.memory import MemoryObserver
    from tuidebug.wire.gpu_messages import AllocatorStats, MemorySnapshotResult
    from tuidebug.wire.messages import Command, StepPoint

    sent: list[Any] = []
    probe = SimpleNamespace(send=sent.append, rank=0, step=1, pid=os.getpid())
    observer = MemoryObserver(probe, interval=0.0)  # type: ignore[arg-type]
    observer.on_boundary(1, StepPoint(1, time.time()), time.perf_counter())
    stats = [m for m in sent if isinstance(m, AllocatorStats)]
    figures = {d.device: d for m in stats for d in m.devices}
    mine = figures.get(device.index)
    expected = torch.cuda.memory_allocated(device)
    report.check(
        "probe allocator figure = torch.cuda.memory_allocated",
        mine is not None and mine.allocated == expected,
        f"probe {(mine.allocated if mine else -1) / MIB:.1f} MiB, torch {expected / MIB:.1f} MiB",
    )
    with tempfile.TemporaryDirectory() as folder:
        # A one-step snapshot: recording starts at step 1's boundary, the file comes at step 2's
        # (tests/gpu/check_memory_snapshot.py checks the snapshot itself under a real run).
        path = os.path.join(folder, "snap.pickle")
        observer.snapshot(Command(name="memory-snapshot", args={"path": path, "steps": "1"}))
        observer.on_boundary(2, StepPoint(2, time.time()), time.perf_counter())
        size = os.path.getsize(path) if os.path.exists(path) else 0
        answers = [m.error or m.path for m in sent if isinstance(m, MemorySnapshotResult)]
        report.check("memory-snapshot wrote a file", size > 0, f"{size} bytes; {answers[-1:]}")
    with contextlib.suppress(Exception):
        torch.cuda.memory._record_memory_history(enabled=None)  # stop recording again
    observer.sent = sent
    return observer


def exercise_oom(
    report: Report,
    poller: GpuPoller,
    torch: Any,
    device: Any,
    uuid: str,
    observer: Any = None,
) -> None:
    _, start = used_now(poller, uuid)
    blocks = []
    total = torch.cuda.mem_get_info(device)[1]
    chunk = max(256 * MIB, total // 64)
    started = time.perf_counter()
    caught = None
    snap: GpuSnapshot | None = None
    full: GpuDevice | None = None
    try:
        # Big chunks first, then small ones, so the OOM comes with the GPU really full.
        while chunk >= 16 * MIB:
            try:
                while True:
                    blocks.append(torch.empty(chunk, dtype=torch.uint8, device=device))
            except torch.cuda.OutOfMemoryError as exc:
                caught = exc
                chunk //= 4
        snap, full = used_now(poller, uuid)  # the panel's view at the moment of the OOM
    finally:
        held = sum(b.numel() for b in blocks)
        del blocks
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
    report.check(
        "OutOfMemoryError raised and caught",
        caught is not None,
        f"after holding {held / GIB:.2f} GiB in {time.perf_counter() - started:.1f} s",
    )
    if caught is not None:
        report.note("OOM message", str(caught).splitlines()[0][:160])
    if caught is not None and observer is not None:
        check_oom_report(report, caught, observer)
    if snap is not None and full is not None and full.memory_fraction is not None:
        report.check(
            "NVML sees the GPU full at the OOM",
            full.memory_fraction >= 0.9,
            f"{full.memory_fraction * 100:.1f}% used",
        )
        print_panel(snap, own_pids={os.getpid()})
    _, back = used_now(poller, uuid)
    if start and back and start.memory_used is not None and back.memory_used is not None:
        report.check(
            "memory back after freeing",
            back.memory_used <= start.memory_used + MEMORY_TOLERANCE,
            f"{back.memory_used / MIB:.0f} MiB now, {start.memory_used / MIB:.0f} before",
        )


def check_oom_report(report: Report, caught: BaseException, observer: Any) -> None:
    """The allocator's OOM observer fired, and the console builds its report from it."""
    from tuidebug.console.memory_model import GpuState
    from tuidebug.wire.gpu_messages import OomMoment
    from tuidebug.wire.messages import ScriptError

    moments = [m for m in observer.sent if isinstance(m, OomMoment)]
    report.check(
        "OOM observer sent OomMoment",
        bool(moments),
        f"{len(moments)} sent; first asked {moments[0].requested / MIB:.0f} MiB"
        if moments
        else "none (torch without _cuda_attach_out_of_memory_observer?)",
    )
    state = GpuState()
    state.fold(observer.sent)
    state.fold(
        [ScriptError(exc_type=type(caught).__name__, text=str(caught), traceback="", step=1)]
    )
    report.check(
        "console OOM report built",
        state.oom is not None and state.oom.allocator is not None,
        f"moment={state.oom.moment is not None}" if state.oom else "no report",
    )


def print_panel(snap: GpuSnapshot, own_pids: set[int]) -> None:
    try:
        from rich.console import Console

        from tuidebug.console.widgets.gpu_panel import GpuPanelView
    except ImportError as exc:
        print(f"(panel not printed: {exc})")
        return
    console = Console(width=80)
    console.rule("GPU panel, compact")
    console.print(GpuPanelView(snap))
    console.rule("GPU panel, detailed")
    console.print(GpuPanelView(snap, own_pids=frozenset(own_pids), detailed=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", type=int, default=0, help="torch CUDA index to test")
    parser.add_argument("--no-oom", action="store_true", help="skip filling the GPU")
    args = parser.parse_args(argv)

    poller = GpuPoller(Nvml())
    snap = poller.poll()
    if not snap.devices:
        print(f"no GPU here ({snap.reason}); nothing to check.")
        print(
            f"host: CPU {snap.host.cpu_percent:.0f}%, "
            f"RAM {snap.host.ram_used / GIB:.1f}/{snap.host.ram_total / GIB:.1f} GiB"
        )
        print_panel(snap, own_pids=set())
        return 0

    report = Report()
    report.note("driver", str(snap.driver_version))
    durations = []
    for _ in range(10):
        t = time.perf_counter()
        poller.poll()
        durations.append(time.perf_counter() - t)
    report.note(
        "poll time",
        f"median {sorted(durations)[5] * 1e3:.2f} ms over 10 polls of {len(snap.devices)} GPU(s)",
    )
    errors = [f"GPU {d.index}: {d.error}" for d in snap.devices if d.error]
    report.check("no device errors", not errors, "; ".join(errors) or "none")
    compare_with_smi(report, snap)
    check_torch(report, poller, snap, args.device, oom=not args.no_oom)
    poller.close()
    print(f"\n{report.failures} check(s) failed." if report.failures else "\nall checks passed.")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
