"""The ``tuidebug`` command: run, attach, ls, rm, gc, ckpt.

Start-up stays light: torch and Textual are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from tuidebug import __version__


def _fail(message: str, code: int = 2) -> int:
    print(f"tuidebug: {message}", file=sys.stderr)
    return code


# --- run ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Start a script under a supervisor and open the console on it."""
    from tuidebug.paths import UnsafeDirectory
    from tuidebug.supervisor.child import script_error
    from tuidebug.supervisor.launch import LaunchError, start_supervised

    problem = script_error(args.script)
    if problem:
        return _fail(problem)
    from tuidebug.probe.conditions import ConditionError, parse_condition

    for text in args.break_on:
        try:
            parse_condition(text)
        except ConditionError as error:
            return _fail(f"--break-on: {error}")
    if not args.detach and not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _fail("the console needs a terminal; use `tuidebug run --detach` for batch jobs")
    if args.detach and args.compare:
        return _fail(
            "--compare draws on the console's chart: not with --detach (later: "
            "`tuidebug attach RUN --compare OTHER`)"
        )
    launch = _job_launch(args)
    if isinstance(launch, str):
        return _fail(launch)
    try:
        paths = start_supervised(
            args.script,
            args.script_args,
            options=probe_options(args),
            break_on=args.break_on,
            # Hold a crashed script for a post-mortem only when someone is watching.
            hold_on_error=not args.no_hold and not args.detach,
            launch=launch,
        )
    except (UnsafeDirectory, LaunchError) as error:
        return _fail(str(error), 1)
    if args.detach:
        print(f"tuidebug: run {paths.run_id} started ({args.script})")
        print(f"  attach a console:  tuidebug attach {paths.run_id}")
        print(f"  script output:     {paths.pty_log}")
        return 0
    return _open_console(paths, launched=True, compare=args.compare)


TORCHRUN_FLAGS = (
    "nnodes",
    "node_rank",
    "rdzv_endpoint",
    "rdzv_backend",
    "rdzv_id",
    "master_addr",
    "master_port",
    "max_restarts",
)


def _job_launch(args: argparse.Namespace) -> dict[str, Any] | str | None:
    """The torchrun launch of ``tuidebug run --nproc-per-node N``; a reason when the flags do
    not make one; None for a single process."""
    from tuidebug.supervisor.launch import job_launch

    given = [name for name in TORCHRUN_FLAGS if getattr(args, name) is not None]
    if args.nproc_per_node is None:
        if given or args.standalone:
            flag = "--" + (given[0] if given else "standalone").replace("_", "-")
            return f"{flag} is a torchrun flag: it needs --nproc-per-node N"
        return None
    if args.nproc_per_node < 1:
        return "--nproc-per-node: at least 1"
    launch = job_launch(
        args.nproc_per_node,
        standalone=args.standalone,
        **{name: getattr(args, name) for name in TORCHRUN_FLAGS},
    )
    from tuidebug.supervisor.nodes import plan_nodes  # more than one node: node 0 gathers them

    nodes = plan_nodes(launch, args.tuidebug_port, args.token_file)
    if isinstance(nodes, str):
        return nodes
    if nodes is not None:
        launch["nodes"] = nodes
    return launch


def probe_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run's options for the probe's extensions (tuidebug/probe/extensions/)."""
    options: dict[str, Any] = {
        "budget": args.budget,
        "pause_on_nonfinite": not args.no_pause_on_nonfinite,
    }
    if args.stats_every:
        options["stats_every"] = args.stats_every
    if args.save_every:
        options["save_every"] = args.save_every
    if args.keep:
        options["keep"] = args.keep
    if args.resume:
        options["resume"] = os.path.abspath(args.resume)
    if args.checkpoint_dir:
        options["checkpoint_dir"] = os.path.abspath(args.checkpoint_dir)
    options["gpu_interval"] = args.gpu_interval
    if args.ignore:
        options["ignore"] = list(args.ignore)
    if args.overfit_batch:
        options["overfit_batch"] = True
    if args.hang_after is not None:
        options["hang_after"] = args.hang_after
    return options


def _open_console(paths: Any, launched: bool, compare: str | None = None) -> int:
    from tuidebug.console.app import ConsoleExit, run_console

    result = run_console(paths, exit_on_early_end=launched, compare=compare)
    if result.kind == ConsoleExit.LEFT_RUNNING:
        print(
            f"tuidebug: run {paths.run_id} goes on; "
            f"attach again with: tuidebug attach {paths.run_id}"
        )
        return 0
    if result.kind == ConsoleExit.ERROR:
        return _fail(result.message, 1)
    if result.kind == ConsoleExit.RELEASED:
        code = _wait_for_end(paths)
        return code if code is not None else 1
    if result.kind == ConsoleExit.STOPPED:
        code = _wait_for_end(paths)
        print(f"tuidebug: run {paths.run_id} stopped at step {result.steps}")
        return code if code is not None else 0
    # The run ended while the console was open (or before it was attached).
    if result.steps == 0 and launched:
        tail = (
            paths.pty_log.read_bytes()[-4000:].decode(errors="replace")
            if paths.pty_log.exists()
            else ""
        )
        if tail.strip():
            sys.stderr.write(tail if tail.endswith("\n") else tail + "\n")
        code = result.exit_code
        how = f"exited with code {code}" if code is not None else "ended"
        why = "" if code else " (no optimizer.step(), backward() or dbg.step() was seen)"
        return _fail(
            f"{paths.run_id}: the script {how} before its first training step{why}",
            code if code else 1,
        )
    return result.exit_code or 0


def _wait_for_end(paths: Any, timeout: float = 20.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = paths.read_meta()
        if meta.get("ended"):
            code = meta.get("exit_code")
            return int(code) if isinstance(code, int) else None
        time.sleep(0.1)
    return None


# --- attach, ls ---------------------------------------------------------------------------------


def cmd_attach(args: argparse.Namespace) -> int:
    """Open a console on a live run (or on a finished run's history)."""
    from tuidebug.paths import find_run

    paths = find_run(args.run_id)
    if paths is None:
        which = f"no run matches {args.run_id!r}" if args.run_id else "no runs yet"
        return _fail(f"{which}; see `tuidebug ls`")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _fail("the console needs a terminal")
    return _open_console(paths, launched=False, compare=args.compare)


def cmd_ls(args: argparse.Namespace) -> int:
    """List runs, newest first: enough to choose one (state, last step, final loss, how long
    ago it started, the command), and the disk each takes."""
    from rich.console import Console
    from rich.table import Table

    from tuidebug.paths import scan_runs
    from tuidebug.runs import disk_usage, summarize
    from tuidebug.units import fmt_bytes

    runs, skipped = scan_runs()
    names = ("run", "state", "steps", "loss", "age", "size")
    summaries = [summarize(paths) for paths in runs[: args.limit]]
    rows = [
        (s.run_id, s.state_text, s.steps_text, s.loss_text, s.age(), fmt_bytes(disk_usage(p)))
        for s, p in zip(summaries, (paths.folder for paths in runs), strict=False)
    ]
    # The command last, fit to what is left of the terminal's width: at 80 columns every
    # other cell fits whole and a long command loses its script's folder, then the end of its
    # arguments (Rich would rather squeeze whole columns away). Two spaces between columns.
    console = Console()
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(names)]
    room = max(8, console.width - sum(widths) - 2 * len(widths))
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False)
    for name in (*names, "command"):
        right = name in ("steps", "age", "size")
        table.add_column(name, no_wrap=True, justify="right" if right else "left")
    for row, summary in zip(rows, summaries, strict=True):
        table.add_row(*row, summary.command_fit(room))
    console.print(table)
    if skipped:
        # One line, not one per folder: a shared TUIDEBUG_HOME may hold many.
        print(
            f"tuidebug: {len(skipped)} folder(s) in {skipped[0][0].parent} not shown: "
            "another user's or a symlink",
            file=sys.stderr,
        )
    return 0


# --- stacks -------------------------------------------------------------------------------------

STACKS_WAIT = 10.0  # seconds for every rank's answer (the faulthandler fallback takes ~3)


def cmd_stacks(args: argparse.Namespace) -> int:
    """Print every rank's threads' stacks, right now, from a live run."""
    import asyncio

    from tuidebug.paths import list_runs, match_runs
    from tuidebug.runs import is_live

    if args.run_id is None:
        paths = next((r for r in list_runs() if is_live(r)), None)
        if paths is None:
            return _fail("no live run; see `tuidebug ls`")
    else:
        matches = match_runs(args.run_id)
        if len(matches) != 1:
            which = "matches more than one run" if matches else "matches no run"
            return _fail(f"{args.run_id!r} {which}; see `tuidebug ls`")
        paths = matches[0]
        if not is_live(paths):
            state = paths.read_meta().get("state", "ended")
            return _fail(f"run {paths.run_id} is over ({state}): there is nothing to ask", 1)
    try:
        text = asyncio.run(_ask_stacks(paths, args.timeout))
    except _NoStacks as error:
        return _fail(f"run {paths.run_id}: {error}", 1)
    print(text)
    return 0


class _NoStacks(Exception):
    pass


async def _ask_stacks(paths: Any, timeout: float) -> str:
    """Ask the run's supervisor for every rank's stacks; the text to print."""
    import asyncio
    import secrets

    from tuidebug.wire.client import ConnectError, RunConnection
    from tuidebug.wire.messages import Command, RunInfo
    from tuidebug.wire.stack_messages import STACKS, Stacks, StacksDone, stacks_text

    try:
        connection = await RunConnection.open(paths, history=False)
    except ConnectError as error:
        raise _NoStacks(str(error)) from None
    request = secrets.token_hex(4)
    connection.send(Command(name=STACKS, rank=-1, args={"id": request}))
    replies: dict[int, Stacks] = {}
    done: StacksDone | None = None

    async def read() -> None:
        nonlocal done
        async for batch in connection.batches():
            for message in batch:
                if isinstance(message, RunInfo) and message.ended is not None:
                    raise _NoStacks(f"the run ended ({message.state})")
                if isinstance(message, Stacks) and message.request == request:
                    replies[message.rank] = message
                elif isinstance(message, StacksDone) and message.request == request:
                    done = message
                    return
        raise _NoStacks("the supervisor closed the connection before answering")

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        if not replies:
            raise _NoStacks(f"no answer from the supervisor in {timeout:g} s") from None
    finally:
        connection.close()
    if done is not None and not done.ranks:
        raise _NoStacks("no rank is connected (the script has not started yet, or it ended)")
    parts = [stacks_text(replies[rank]) for rank in sorted(replies)]
    if done is None:
        parts.append(f"(no end of the answer in {timeout:g} s: some ranks may be missing)")
    elif done.unanswered:
        ranks = ", ".join(map(str, done.unanswered))
        parts.append(f"no stacks from rank(s) {ranks}: {done.note}")
    return "\n\n".join(parts)


# --- rm, gc -------------------------------------------------------------------------------------


def _describe(paths: Any) -> str:
    """``RUN_ID  state  script args``: read before the folder goes."""
    from tuidebug.runs import command_line

    meta = paths.read_meta()
    return f"{paths.run_id}  {meta.get('state', '?')}  {command_line(meta)}"


def _remove(runs: list[Any], verb: str, dry_run: bool = False) -> tuple[int, int, int]:
    """Remove (or, for a dry run, measure) each run, printing a line for each; returns how many
    went, how many could not, and the bytes freed."""
    from tuidebug.runs import NotRemovable, disk_usage, remove_run
    from tuidebug.units import fmt_bytes

    removed = failed = freed = 0
    for paths in runs:
        what = _describe(paths)
        try:
            size = disk_usage(paths.folder) if dry_run else remove_run(paths)
        except NotRemovable as error:
            _fail(f"not removed: {error}")
            failed += 1
            continue
        print(f"{verb} {what}  {fmt_bytes(size)}")
        removed += 1
        freed += size
    return removed, failed, freed


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove ended runs by id or unique prefix; a live run is refused (stop it first)."""
    from tuidebug.runs import resolve
    from tuidebug.units import fmt_bytes

    resolved = resolve(args.run_ids)
    for problem in resolved.problems:
        _fail(problem)
    removed, failed, freed = _remove(resolved.runs, "removed")
    failed += len(resolved.problems)
    if removed > 1 or failed:
        print(f"tuidebug rm: removed {removed} run(s), freed {fmt_bytes(freed)}")
    return 1 if failed else 0


def _duration(text: str) -> str:
    """argparse's check of --older-than; the text is kept, to be said back as given."""
    from tuidebug.runs import parse_duration

    try:
        parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove the ended runs that are beyond the newest K and older than the given age."""
    from tuidebug.runs import parse_duration, plan_gc
    from tuidebug.units import fmt_bytes

    plan = plan_gc(parse_duration(args.older_than), args.keep)
    for folder, why in plan.skipped:
        print(f"tuidebug gc: skipped {folder}: {why}", file=sys.stderr)
    for paths in plan.live:
        print(f"tuidebug gc: kept {paths.run_id}: still live", file=sys.stderr)
    verb = "would remove" if args.dry_run else "removed"
    removed, failed, freed = _remove(plan.remove, verb, dry_run=args.dry_run)
    rule = f"ended more than {args.older_than} ago and beyond the newest {args.keep}"
    if removed or failed:
        did = "would free" if args.dry_run else "freed"
        print(f"tuidebug gc: {verb} {removed} run(s) ({rule}), {did} {fmt_bytes(freed)}")
    else:
        print(f"tuidebug gc: nothing to remove ({plan.total} run(s), none {rule})")
    return 1 if failed else 0


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuidebug",
        description="A terminal console for debugging PyTorch training runs.",
    )
    parser.add_argument("--version", action="version", version=f"tuidebug {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a training script under the console",
        description="Run SCRIPT with the probe installed and open the console on it. "
        "The script needs no changes; arguments after SCRIPT are passed to it.",
    )
    run.add_argument("--detach", action="store_true", help="start the run without a console")
    run.add_argument(
        "--break-on",
        action="append",
        default=[],
        metavar="COND",
        help="pause when COND holds, e.g. 'loss > 5', 'loss nonfinite', 'grad_norm > 10', "
        "'step == 500' (repeatable)",
    )
    run.add_argument(
        "--budget",
        type=float,
        default=0.01,
        metavar="FRACTION",
        help="share of step time the probe may cost on its every-step work and layer "
        "statistics together (default 0.01: 1%%); the statistics are sampled as often as "
        "what is left allows",
    )
    run.add_argument(
        "--stats-every",
        type=int,
        default=0,
        metavar="N",
        help="sample layer statistics every N steps, whatever they cost",
    )
    run.add_argument(
        "--no-pause-on-nonfinite",
        action="store_true",
        help="do not pause when a NaN/Inf first shows in the loss, activations or gradients",
    )
    run.add_argument(
        "--save-every", type=int, default=0, metavar="N", help="save a checkpoint every N steps"
    )
    run.add_argument(
        "--keep", type=int, default=0, metavar="K", help="keep only the K newest checkpoints"
    )
    run.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="where checkpoints are saved (default: the run's folder, checkpoints/)",
    )
    run.add_argument(
        "--resume",
        metavar="PATH",
        help="start from this checkpoint (applied when the model and optimizer are first seen)",
    )
    run.add_argument(
        "--gpu-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the supervisor polls NVML (default 1)",
    )
    run.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="RULE",
        help="silence a training-bug rule by its id (repeatable)",
    )
    run.add_argument(
        "--overfit-batch",
        action="store_true",
        help="feed the first batch again on every step (a DataLoader's), and report whether "
        "the loss goes to zero",
    )
    run.add_argument(
        "--hang-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="alert, with every rank's stacks, when no rank has advanced for this long "
        "(default: the larger of 300 and 20 times the median step time; 0: off)",
    )
    run.add_argument(
        "--compare",
        metavar="RUN",
        help="overlay another run's loss curve (a run id, a unique prefix, or a run folder) "
        "on the chart, aligned by step; v in the console picks or clears one",
    )
    run.add_argument(
        "--no-hold",
        action="store_true",
        help="when the script raises, let it exit at once instead of holding it for a "
        "post-mortem debugger",
    )
    job = run.add_argument_group(
        "torchrun jobs",
        "With --nproc-per-node the script runs through torch.distributed.run, one process per "
        "rank, each with the probe; these flags go to torchrun as given. Without --nnodes or "
        "a rendezvous/master flag the job is --standalone (a free local port).",
    )
    job.add_argument(
        "--nproc-per-node", type=int, metavar="N", help="ranks on this node (torchrun's)"
    )
    job.add_argument("--nnodes", metavar="N|MIN:MAX", help="nodes in the job")
    job.add_argument("--node-rank", type=int, metavar="R", help="this node's rank")
    job.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="where the ranks meet")
    job.add_argument("--rdzv-backend", metavar="NAME", help="c10d, static, etcd...")
    job.add_argument("--rdzv-id", metavar="ID", help="the job's id at the rendezvous")
    job.add_argument("--master-addr", metavar="HOST", help="rank 0's address (static)")
    job.add_argument("--master-port", type=int, metavar="PORT", help="rank 0's port (static)")
    job.add_argument("--standalone", action="store_true", help="a single-node job")
    job.add_argument("--max-restarts", type=int, metavar="K", help="restarts of a failed job")
    job.add_argument(
        "--token-file",
        metavar="FILE",
        help="more than one node: the job's secret, the same on every node (mode 0600; node 0 "
        "creates it when missing); node 0's supervisor admits the others' with it only",
    )
    job.add_argument(
        "--tuidebug-port",
        type=int,
        metavar="PORT",
        help="more than one node: the TCP port node 0's supervisor gathers the others on, at "
        "the rendezvous host (default: the rendezvous port + 1)",
    )
    run.add_argument("script", help="the training script")
    run.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    run.set_defaults(func=cmd_run)

    attach = commands.add_parser(
        "attach",
        help="open a console on a run (the newest by default)",
        description="Open a console on a live run, with its history so far; on a finished run, "
        "show what it recorded.",
    )
    attach.add_argument("run_id", nargs="?", help="a run id or a unique prefix of one")
    attach.add_argument(
        "--compare",
        metavar="RUN",
        help="overlay another run's loss curve on the chart (as `tuidebug run --compare`)",
    )
    attach.set_defaults(func=cmd_attach)

    stacks = commands.add_parser(
        "stacks",
        help="where is each rank now: every thread's stack, of every rank",
        description="Print the Python stack of every thread of every rank of a live run, "
        "right now (the training thread first, innermost frame last), even when training is "
        "stuck in a collective or in C code.",
    )
    stacks.add_argument(
        "run_id", nargs="?", help="a run id or a unique prefix of one (default: the newest live)"
    )
    stacks.add_argument(
        "--timeout",
        type=float,
        default=STACKS_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for every rank (default {STACKS_WAIT:g})",
    )
    stacks.set_defaults(func=cmd_stacks)

    ls = commands.add_parser("ls", help="list runs, newest first")
    ls.add_argument("--limit", type=int, default=20, help="show at most this many (20)")
    ls.set_defaults(func=cmd_ls)

    rm = commands.add_parser(
        "rm",
        help="remove ended runs",
        description="Remove the folders of ended runs (history, output, checkpoints saved in "
        "the run's folder) and say how much disk that freed. A live run is refused: stop it "
        "first. Runs of other users are never touched.",
    )
    rm.add_argument("run_ids", nargs="+", metavar="RUN", help="a run id or a unique prefix of one")
    rm.set_defaults(func=cmd_rm)

    gc = commands.add_parser(
        "gc",
        help="remove old ended runs, keeping the newest",
        description="Remove the ended runs that are both older than --older-than (counted "
        "from their end) and beyond the newest --keep runs in `tuidebug ls` order; say what "
        "went and how much disk that freed. Live runs are never removed, nor other users' runs.",
    )
    gc.add_argument(
        "--older-than",
        type=_duration,
        default="30d",
        metavar="AGE",
        help="only runs that ended longer ago than this: 30d, 12h, 90m, 45s, 2w (default 30d)",
    )
    gc.add_argument(
        "--keep",
        type=_count,
        default=20,
        metavar="K",
        help="never the K newest runs, whatever their age; live runs count (default 20)",
    )
    gc.add_argument(
        "--dry-run", action="store_true", help="only say what would be removed, and its size"
    )
    gc.set_defaults(func=cmd_gc)

    from tuidebug.ckpt.cli import add_parser as add_ckpt_parser
    from tuidebug.memory_cli import add_parser as add_memory_parser
    from tuidebug.profile_cli import add_parser as add_profile_parser

    add_ckpt_parser(commands)
    add_profile_parser(commands)  # `tuidebug profile RUN --steps K`
    add_memory_parser(commands)  # `tuidebug memory RUN --steps K`
    try:  # the training-bug checks: `tuidebug check`, `tuidebug lr-find`
        from tuidebug.checks.cli import add_parsers as add_check_parsers
    except ModuleNotFoundError as error:
        if error.name not in ("tuidebug.checks", "tuidebug.checks.cli"):
            raise
    else:
        add_check_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
