"""``tuidebug profile RUN --steps K``: capture the next K steps of a live run with torch.profiler.

The command goes to every rank's probe (``probe/extensions/profile.py``), which starts the
capture at its next step boundary and answers with a ``ProfileResult``: the trace's path in the
run folder, the top operators by self time and each captured step's phases. This module also
holds the text the console's profile screen shows (no Textual, no torch here), and the client
side every "ask the ranks, wait for their answers" command shares (``ask_ranks``,
``run_request``, ``add_request_arguments``: ``tuidebug memory`` is built on them too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from tuidebug.wire.messages import Command, Message
from tuidebug.wire.phase_messages import PHASES, ProfileResult, ProfileStarted

R = TypeVar("R", bound=Message)

DEFAULT_TIMEOUT = 120.0


def _us(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1e3:
        return f"{value / 1e3:.2f} ms"
    return f"{value:.0f} us"


def op_rows(result: ProfileResult, limit: int = 15) -> list[tuple[str, str, str, str, str]]:
    """(operator, calls, self time, share of the captured self time, input shapes) per row."""
    device = result.sort == "self_device"
    total = sum(op.self_device if device else op.self_cpu for op in result.ops) or 1.0
    rows = []
    for op in result.ops[:limit]:
        own = op.self_device if device else op.self_cpu
        rows.append((op.name, str(op.calls), _us(own), f"{own / total:.0%}", op.shapes))
    return rows


def timeline_lines(result: ProfileResult) -> list[str]:
    """One line per captured step: its time and its phases, in milliseconds."""
    lines = []
    for i, row in enumerate(result.timeline):
        *phases, total = row
        parts = "  ".join(
            f"{name} {value * 1e3:.2f}" for name, value in zip(PHASES, phases, strict=False)
        )
        lines.append(f"step {result.first + i}: {total * 1e3:.2f} ms  ({parts})")
    return lines


def result_text(result: ProfileResult) -> str:
    """The whole answer as text: what the command prints."""
    if result.error:
        return f"rank {result.rank}: {result.error}"
    steps = result.step - result.first + 1
    what = "self device time" if result.sort == "self_device" else "self CPU time"
    lines = [
        f"rank {result.rank}: steps {result.first}-{result.step} ({steps} steps, "
        f"{result.wall:.2f} s; stopping and writing the trace took {result.overhead:.2f} s)",
        f"trace: {result.trace} ({result.trace_bytes / 1e6:.1f} MB; chrome://tracing or "
        "ui.perfetto.dev)",
        f"top operators by {what}:",
    ]
    rows = op_rows(result)
    width = max((len(r[0]) for r in rows), default=8)
    width = min(width, 40)
    for name, calls, own, share, shapes in rows:
        lines.append(f"  {name[:width]:<{width}} {calls:>7} {own:>10} {share:>5}  {shapes[:60]}")
    if result.timeline:
        lines.append("steps (ms):")
        lines += [f"  {line}" for line in timeline_lines(result)]
    return "\n".join(lines)


def result_dict(result: ProfileResult) -> dict[str, Any]:
    return {
        "rank": result.rank,
        "first": result.first,
        "last": result.step,
        "trace": result.trace,
        "trace_bytes": result.trace_bytes,
        "sort": result.sort,
        "ops": [
            {
                "name": op.name,
                "calls": op.calls,
                "self_cpu_us": op.self_cpu,
                "cpu_total_us": op.cpu_total,
                "self_device_us": op.self_device,
                "shapes": op.shapes,
            }
            for op in result.ops
        ],
        "timeline": [dict(zip([*PHASES, "total"], row, strict=False)) for row in result.timeline],
        "wall_s": result.wall,
        "overhead_s": result.overhead,
        "error": result.error,
    }


async def ask_ranks(
    paths: Any,
    command: Command,
    started_type: type[Message],
    result_type: type[R],
    timeout: float,
    unstarted: Callable[[R], bool],
    what: str = "capture",
) -> list[R]:
    """Send ``command`` to every rank and wait for each one that answered ``started_type`` to
    answer ``result_type`` (a rank answering ``unstarted(result)``, a refusal, needs no start);
    their results by rank (raises RuntimeError with a one-line reason when none comes)."""
    from tuidebug.wire.client import RunConnection
    from tuidebug.wire.messages import RunInfo

    connection = await RunConnection.open(paths, history=False)
    started: set[int] = set()
    results: dict[int, R] = {}

    async def read() -> None:
        connection.send(command)
        async for batch in connection.batches():
            for message in batch:
                if isinstance(message, RunInfo) and message.ended is not None:
                    raise RuntimeError(f"the run ended ({message.state})")
                if isinstance(message, started_type):
                    started.add(message.rank)
                elif isinstance(message, result_type) and (
                    message.rank in started or unstarted(message)
                ):
                    results[message.rank] = message
                    if started <= set(results):
                        return
        raise RuntimeError(f"the supervisor closed the connection before the {what} ended")

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        if not results:
            how = "started" if started else "began (is the run paused, or between steps?)"
            raise RuntimeError(f"no {what} {how} within {timeout:g} s") from None
    finally:
        connection.close()
    return [results[rank] for rank in sorted(results)]


async def capture(paths: Any, steps: int, timeout: float) -> list[ProfileResult]:
    """Ask every rank for a capture of ``steps`` steps; their results."""
    command = Command(name="profile", rank=-1, args={"steps": str(steps)})
    return await ask_ranks(
        paths, command, ProfileStarted, ProfileResult, timeout, lambda r: bool(r.error)
    )


def run_request(
    args: argparse.Namespace,
    verb: str,
    ask: Callable[[Any], Coroutine[Any, Any, Sequence[R]]],
    text: Callable[[R], str],
    as_dict: Callable[[R], dict[str, Any]],
    status: Callable[[Sequence[R]], int],
) -> int:
    """A command that asks a live run's ranks for something: find the run (exit 2 when there
    is none), ``ask`` it (exit 1 with one line when it fails), print the results as text or
    ``--json``; the exit status is ``status(results)``."""
    from tuidebug.paths import find_run
    from tuidebug.wire.client import ConnectError

    paths = find_run(args.run)
    if paths is None:
        print(f"tuidebug: no run {args.run or ''}".rstrip(), file=sys.stderr)
        return 2
    try:
        results = asyncio.run(ask(paths))
    except (ConnectError, RuntimeError, OSError) as error:
        print(f"tuidebug: {verb} {paths.run_id}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([as_dict(r) for r in results], indent=2))
    else:
        print("\n\n".join(text(r) for r in results))
    return status(results)


def cmd_profile(args: argparse.Namespace) -> int:
    return run_request(
        args,
        "profile",
        lambda paths: capture(paths, args.steps, args.timeout),
        result_text,
        result_dict,
        lambda results: 1 if any(r.error for r in results) else 0,
    )


def add_request_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """RUN, --steps K, --timeout, --json: the arguments of a command built on run_request."""
    parser.add_argument("run", nargs="?", help="run id or prefix (default: the newest run)")
    parser.add_argument(
        "--steps", type=int, default=steps, metavar="K", help=f"steps (default {steps})"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the result"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_parser(commands: Any) -> None:
    profile = commands.add_parser(
        "profile",
        help="capture the next K steps of a live run with torch.profiler",
        description="Capture the next K steps of a live run with torch.profiler (CPU and CUDA "
        "activities, shapes, memory), starting at a step boundary. Writes a Chrome trace into "
        "the run folder and prints the top operators by self time and each step's phases.",
    )
    add_request_arguments(profile, steps=5)
    profile.set_defaults(func=cmd_profile)
