"""``tuidebug memory RUN --steps K``: a CUDA memory snapshot of the next K steps of a live run.

The command goes to every rank's probe (``probe/extensions/memory.py``, action
``memory-snapshot``), which records allocation history from its next step boundary for K steps,
writes the snapshot (a pickle https://pytorch.org/memory_viz opens) into the run folder and
answers with a ``MemorySnapshotResult``: the top allocation sites in the script. Built on
``profile_cli``'s request helpers (``tuidebug profile`` is the same shape of command). This module
also holds the text the console's GPU screen shows (no Textual, no torch here).

Exit status: 0 a snapshot was written on every rank that answered; 1 a failure (no answer in
time, the run ended, a rank's snapshot failed); 2 no such run; 3 the run does not use CUDA
(a calm message: nothing to record, nothing written, the run goes on).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import msgspec

from tuidebug.profile_cli import add_request_arguments, ask_ranks, run_request
from tuidebug.units import fmt_bytes
from tuidebug.wire.gpu_messages import MemorySnapshotResult, MemorySnapshotStarted
from tuidebug.wire.messages import Command

NO_CUDA_EXIT = 3
VIEWER = "https://pytorch.org/memory_viz"


SITE_COLUMNS = ("peak", "at end", "allocs", "allocated")


def site_table(result: MemorySnapshotResult, limit: int = 15) -> tuple[str, list[str]]:
    """The allocation sites' figures as aligned text: the header, and one line per site of
    ``result.sites[:limit]`` (peak, live at the end, allocations, bytes allocated); the site's
    name goes after each."""
    rows = [
        (fmt_bytes(s.peak), fmt_bytes(s.live), f"{s.allocs:,}", fmt_bytes(s.allocated))
        for s in result.sites[:limit]
    ]
    widths = [max(len(row[i]) for row in [SITE_COLUMNS, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(f"{cell:>{w}}" for cell, w in zip(row, widths, strict=False))

    return line(SITE_COLUMNS), [line(row) for row in rows]


def summary_lines(result: MemorySnapshotResult) -> list[str]:
    """What the snapshot found, before its table (the console's status and the CLI's head)."""
    if result.unavailable:
        return [f"rank {result.rank}: {result.unavailable}"]
    if result.error:
        return [f"rank {result.rank}: {result.error}"]
    steps = result.step - result.first + 1
    lines = [
        f"rank {result.rank}: steps {result.first}-{result.step} ({steps} steps, "
        f"{result.wall:.2f} s; taking and writing the snapshot took {result.overhead:.2f} s)",
        f"snapshot: {result.path} ({result.file_bytes / 1e6:.1f} MB; open it at {VIEWER})",
        f"allocated {fmt_bytes(result.live)} at the end (reserved {fmt_bytes(result.reserved)}), "
        f"peak {fmt_bytes(result.peak)} during the steps, {result.allocs:,} allocations",
    ]
    if result.before:
        lines.append(
            f"{fmt_bytes(result.before)} of it allocated before the recording (no stack: "
            "parameters, optimizer state)"
        )
    if result.truncated:
        lines.append("the history filled its buffer: the oldest events are lost (fewer steps?)")
    return lines


def result_text(result: MemorySnapshotResult) -> str:
    """The whole answer as text: what the command prints."""
    lines = summary_lines(result)
    if result.unavailable or result.error:
        return "\n".join(lines)
    if not result.sites:
        return "\n".join([*lines, "no allocation was recorded in these steps"])
    head, rows = site_table(result)
    lines += ["top allocation sites (by peak bytes live at once):", f"  {head}  site"]
    lines += [f"  {row}  {site.site}" for row, site in zip(rows, result.sites, strict=False)]
    return "\n".join(lines)


def result_dict(result: MemorySnapshotResult) -> dict[str, Any]:
    """The answer for ``--json``: every field of the message (``step`` as ``last``, seconds as
    ``wall_s``/``overhead_s``, as ``tuidebug profile --json`` names them), sites as objects."""
    data = msgspec.structs.asdict(result)
    data["last"] = data.pop("step")
    data["wall_s"], data["overhead_s"] = data.pop("wall"), data.pop("overhead")
    data["sites"] = [msgspec.structs.asdict(site) for site in result.sites]
    return data


def exit_status(results: Sequence[MemorySnapshotResult]) -> int:
    if any(r.error for r in results):
        return 1
    if results and all(r.unavailable for r in results):
        return NO_CUDA_EXIT
    return 0


async def snapshot(paths: Any, steps: int, timeout: float) -> list[MemorySnapshotResult]:
    """Ask every rank for a snapshot of the next ``steps`` steps; their results."""
    command = Command(name="memory-snapshot", rank=-1, args={"steps": str(steps)})
    return await ask_ranks(
        paths,
        command,
        MemorySnapshotStarted,
        MemorySnapshotResult,
        timeout,
        lambda r: bool(r.error or r.unavailable),
        what="snapshot",
    )


def cmd_memory(args: argparse.Namespace) -> int:
    return run_request(
        args,
        "memory",
        lambda paths: snapshot(paths, args.steps, args.timeout),
        result_text,
        result_dict,
        exit_status,
    )


def add_parser(commands: Any) -> None:
    memory = commands.add_parser(
        "memory",
        help="a CUDA memory snapshot of the next K steps of a live run",
        description="Record CUDA allocation history for the next K steps of a live run "
        "(torch.cuda.memory._record_memory_history, from a step boundary; recording stops by "
        "itself), write the snapshot into the run folder (memory/*.pickle, for "
        f"{VIEWER}) and print the top allocation sites in the script.",
        epilog="Exit status: 0 written; 1 failed (no answer in time, the run ended, a rank "
        f"failed); 2 no such run; {NO_CUDA_EXIT} the run does not use CUDA (nothing recorded).",
    )
    add_request_arguments(memory, steps=3)
    memory.set_defaults(func=cmd_memory)
