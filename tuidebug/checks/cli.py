"""``tuidebug check`` (the guide's "ML test in CI") and ``tuidebug lr-find``.

Both start the script the way ``tuidebug run --detach`` does (a supervisor, the probe, the run's
history on disk) with options for the probe's checks extension, wait for the run to end, and
read what the probe found from the run's stored history. So the checks CI runs are exactly the
ones a live console shows, and the run can be opened afterwards with ``tuidebug attach``.

How ``check`` stops after N steps: the checks extension gets ``max_steps`` and, at that step's
boundary, evaluates its end-of-run rules and ends the script with ``SystemExit(0)``; the script
exits 0, which tells a stop from a failure (any other exit status is the script's own: exit 2).
A run that overstays ``--timeout`` is stopped with the supervisor's "stop-run".

Check's own options come before the script; everything after it is the script's. When no
``--steps`` is given before the script but the script's arguments have ``--steps N``, the check
stops at N too (most training scripts call their step limit that).

``--expect`` (or ``expect`` in ``[tool.tuidebug]``) adds expectations on the stored curves
(``checks/expect.py``): one that fails makes the check exit 1 with a one-line reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from tuidebug.checks.expect import TAIL, ExpectationError, Verdict, judge, parse_expectation
from tuidebug.checks.rules import RULES, SEVERITIES, SEVERITY_MEANING, severity_rank

DEFAULT_STEPS = 100
EXIT_CLEAN, EXIT_ALERTS, EXIT_SCRIPT_FAILED = 0, 1, 2


def _fail(message: str, code: int = EXIT_SCRIPT_FAILED) -> int:
    print(f"tuidebug: {message}", file=sys.stderr)
    return code


def start_run(script: str, script_args: list[str], options: dict[str, Any]) -> Any:
    """Start ``script`` under a supervisor, detached, with the probe ``options``; its RunPaths.

    Nobody is there to open a post-mortem debugger, so a script that raises is not held.
    """
    from tuidebug.supervisor.launch import start_supervised

    return start_supervised(script, script_args, options=options)


def stop_run(paths: Any) -> None:
    """Ask the supervisor to stop the script (SIGINT, then SIGTERM, then SIGKILL)."""
    import asyncio

    from tuidebug.wire.client import ConnectError, RunConnection
    from tuidebug.wire.messages import Command

    async def send() -> None:
        connection = await RunConnection.open(paths)
        connection.send(Command(name="stop-run", rank=-1))
        await asyncio.sleep(0.2)
        connection.close()

    with contextlib.suppress(ConnectError, OSError):
        asyncio.run(send())


def wait_for_end(paths: Any, timeout: float) -> tuple[int | None, bool]:
    """Wait for the run to end (and its supervisor to close the history); (exit code, timed out)."""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        meta = paths.read_meta()
        if meta.get("ended"):
            break
        if time.monotonic() > deadline:
            if not timed_out:
                timed_out = True
                stop_run(paths)
                deadline = time.monotonic() + 20
                continue
            break
        time.sleep(0.05)
    # The supervisor removes its socket after the last history write.
    end = time.monotonic() + 5
    while paths.socket.exists() and time.monotonic() < end:
        time.sleep(0.05)
    code = paths.read_meta().get("exit_code")
    return (int(code) if isinstance(code, int) else None), timed_out


def read_findings(paths: Any) -> dict[str, Any]:
    """Alerts, overfit and LR-finder results, errors and notices from the run's history."""
    from tuidebug.supervisor.store import HistoryStore
    from tuidebug.wire import codec
    from tuidebug.wire.check_messages import Alert, ChecksDone, LrFindResult, OverfitResult
    from tuidebug.wire.messages import Notice, ScriptError
    from tuidebug.wire.phase_messages import StepPhases

    found: dict[str, Any] = {
        "alerts": [],
        "overfit": None,
        "lr_find": None,
        "error": None,
        "done": None,
        "notices": [],
        "steps": 0,
        "points": [],  # rank 0's step points (the expectations read them)
        "phases": {},  # rank -> its StepPhases batches
    }
    if not paths.history.exists():
        return found
    store = HistoryStore(paths.history, readonly=True)
    try:
        for batch in store.iter_steps():
            found["steps"] = max(found["steps"], batch.step)
            if batch.rank == 0:
                found["points"].extend(batch.points)
        for body in store.iter_event_bodies():
            message = codec.decode_body(body)
            if isinstance(message, Alert):
                found["alerts"].append(message)
            elif isinstance(message, OverfitResult):
                found["overfit"] = message
            elif isinstance(message, LrFindResult):
                found["lr_find"] = message
            elif isinstance(message, ScriptError):
                found["error"] = message
            elif isinstance(message, ChecksDone):
                found["done"] = message
            elif isinstance(message, Notice):
                found["notices"].append(message)
            elif isinstance(message, StepPhases):
                found["phases"].setdefault(message.rank, []).append(message)
    finally:
        store.close()
    return found


def _steps_from_script_args(script_args: list[str]) -> int | None:
    for i, arg in enumerate(script_args):
        value = None
        if arg == "--steps" and i + 1 < len(script_args):
            value = script_args[i + 1]
        elif arg.startswith("--steps="):
            value = arg.split("=", 1)[1]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


# --- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from tuidebug.checks.config import load_config
    from tuidebug.supervisor.child import script_error

    problem = script_error(args.script)
    if problem:
        return _fail(problem)
    config = load_config(Path(args.script).resolve().parent)
    fail_on = args.fail_on or config.fail_on
    try:
        expectations = [parse_expectation(text) for text in (args.expect or config.expect)]
    except ExpectationError as error:
        return _fail(str(error))
    # --- the ratchet (--baseline): read the stored run first, so a bad id fails before the run
    baseline: tuple[str, list[Any]] | None = None
    if args.baseline:
        from tuidebug.checks.ratchet import BaselineError, baseline_history, read_points

        try:
            baseline_id, baseline_file = baseline_history(args.baseline)
            baseline = (baseline_id, read_points(baseline_file))
        except BaselineError as error:
            return _fail(str(error))
    # --- end of the ratchet's block
    steps = args.steps or _steps_from_script_args(args.script_args) or DEFAULT_STEPS
    options: dict[str, Any] = {
        "max_steps": steps,
        "checks_every": args.every,
        "pause_on_nonfinite": False,  # nobody is there to resume a pause
        "budget": 0.01,
        "gpu_interval": 5.0,
    }
    if args.ignore:
        options["ignore"] = list(args.ignore)
    if args.overfit_batch:
        options["overfit_batch"] = True
    try:
        paths = start_run(args.script, list(args.script_args), options)
    except RuntimeError as error:
        return _fail(str(error))
    code, timed_out = wait_for_end(paths, args.timeout)
    found = read_findings(paths)
    ignored = set(args.ignore) | config.ignore
    alerts = [a for a in found["alerts"] if a.rule not in ignored]
    failing = [a for a in alerts if severity_rank(a.severity) >= severity_rank(fail_on)]
    script_failed = timed_out or code not in (0, None) or found["error"] is not None
    verdicts = [judge(e, found["points"]) for e in expectations] if not script_failed else []
    unmet = [v for v in verdicts if not v.ok]
    ratchet = None  # the ratchet's verdict; a failed one counts as an unmet expectation
    if baseline is not None and not script_failed:
        from tuidebug.checks.ratchet import compare

        ratchet = compare(found["points"], baseline[1], baseline[0], args.tolerance)
        if not ratchet.ok:
            unmet.append(ratchet)  # type: ignore[arg-type]  # same ok/reason/as_dict shape
    status = (
        EXIT_SCRIPT_FAILED if script_failed else EXIT_ALERTS if failing or unmet else EXIT_CLEAN
    )
    if args.json:
        report = _as_json(paths, found, alerts, status, code, timed_out, fail_on)
        report["expectations"] = [v.as_dict() for v in verdicts]
        report["ratchet"] = None if ratchet is None else ratchet.as_dict()
        if status == EXIT_ALERTS and not failing:
            report["status"] = "expectations-failed"
        print(json.dumps(report, indent=2))
    else:
        _print_report(
            paths,
            found,
            alerts,
            status,
            code,
            timed_out,
            fail_on,
            args.script,
            [*verdicts, *([ratchet] if ratchet is not None else [])],  # type: ignore[list-item]
        )
    for verdict in unmet:  # one line each, on stderr, for CI logs
        if verdict is ratchet:
            print(f"tuidebug: {verdict.reason}", file=sys.stderr)
        else:
            print(f"tuidebug: expectation failed: {verdict.reason}", file=sys.stderr)
    return status


def _alert_dict(alert: Any) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "severity": alert.severity,
        "severity_means": SEVERITY_MEANING.get(alert.severity, ""),
        "step": alert.step,
        "rank": alert.rank,
        "place": alert.place,
        "layer": alert.layer,
        "message": alert.message,
        "evidence": alert.evidence,
        "why": alert.why,
        "fix": alert.fix,
    }


def _as_json(
    paths: Any,
    found: dict[str, Any],
    alerts: list[Any],
    status: int,
    code: int | None,
    timed_out: bool,
    fail_on: str,
) -> dict[str, Any]:
    from tuidebug.wire.phase_messages import summarize

    overfit = found["overfit"]
    error = found["error"]
    return {
        "run_id": paths.run_id,
        "status": {0: "clean", 1: "alerts", 2: "script-failed"}[status],
        "exit_status": status,
        "script_exit_code": code,
        "timed_out": timed_out,
        "steps": found["steps"],
        "fail_on": fail_on,
        "alerts": [_alert_dict(a) for a in alerts],
        "overfit": None
        if overfit is None
        else {
            "steps": overfit.steps,
            "first_loss": overfit.first_loss,
            "last_loss": overfit.last_loss,
            "min_loss": overfit.min_loss,
            "reached": overfit.reached,
        },
        "script_error": None
        if error is None
        else {"type": error.exc_type, "text": error.text, "traceback": error.traceback},
        # Where the step's time went (the probe's step-time breakdown), per rank.
        "step_time": {
            str(rank): summarize(batches) for rank, batches in sorted(found["phases"].items())
        },
    }


def _print_report(
    paths: Any,
    found: dict[str, Any],
    alerts: list[Any],
    status: int,
    code: int | None,
    timed_out: bool,
    fail_on: str,
    script: str,
    verdicts: list[Verdict] | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    colours = {"error": "red", "warning": "yellow", "info": "cyan"}
    if alerts:
        table = Table(title=f"tuidebug check: {script}", show_lines=True, expand=True)
        table.add_column("rule", style="bold", no_wrap=True)
        table.add_column("sev", no_wrap=True)
        table.add_column("step", justify="right", no_wrap=True)
        table.add_column("what and where", ratio=3)
        table.add_column("fix", ratio=2)
        for alert in sorted(alerts, key=lambda a: (-severity_rank(a.severity), a.step)):
            colour = colours.get(alert.severity, "white")
            what = alert.message + (f"\n[dim]{alert.evidence}[/dim]" if alert.evidence else "")
            table.add_row(
                alert.rule,
                f"[{colour}]{alert.severity}[/{colour}]",
                str(alert.step),
                what,
                alert.fix,
            )
        console.print(table)
        shown = [s for s in SEVERITIES if any(a.severity == s for a in alerts)]
        console.print(
            "[dim]" + "; ".join(f"{s} = {SEVERITY_MEANING[s]}" for s in reversed(shown)) + "[/dim]",
            highlight=False,
        )
    overfit = found["overfit"]
    if overfit is not None:
        verdict = "[green]reached[/green]" if overfit.reached else "[red]not reached[/red]"
        console.print(
            f"overfit one batch: loss {overfit.first_loss:.4g} -> {overfit.last_loss:.4g} "
            f"(min {overfit.min_loss:.4g}) in {overfit.steps} steps: {verdict}"
        )
    error = found["error"]
    if error is not None:
        console.print(f"[red]the script failed[/red] at step {error.step}:", highlight=False)
        console.print(error.traceback.rstrip(), markup=False, highlight=False)
    verdicts = verdicts or []
    for expected in verdicts:
        mark = "[green]ok[/green]" if expected.ok else "[red]FAILED[/red]"
        console.print(f"expect {mark}  {expected.reason}", highlight=False)
    counts = {s: sum(1 for a in alerts if a.severity == s) for s in SEVERITIES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no alerts"
    unmet = sum(1 for v in verdicts if not v.ok)
    failing = any(severity_rank(a.severity) >= severity_rank(fail_on) for a in alerts)
    why = [f"alerts at or above {fail_on}"] if failing else []
    why += [f"{unmet} expectation{'s' if unmet > 1 else ''} not met"] if unmet else []
    outcome = {
        EXIT_CLEAN: "[green]clean[/green]",
        EXIT_ALERTS: f"[red]failed[/red] ({', '.join(why)})",
        EXIT_SCRIPT_FAILED: "[red]the script failed[/red]"
        + (" (timed out)" if timed_out else f" (exit code {code})"),
    }[status]
    console.print(
        f"{found['steps']} steps checked, {summary}: {outcome}   "
        f"[dim]run {paths.run_id}: tuidebug attach {paths.run_id}[/dim]"
    )


# --- lr-find ------------------------------------------------------------------------------------


def plot_text(xs: list[float], ys: list[float], width: int = 60, height: int = 14) -> list[str]:
    """A plain-text plot of ys against log10(xs) (no Rich: the console reuses it)."""
    import math

    points = [
        (math.log10(x), y) for x, y in zip(xs, ys, strict=False) if x > 0 and math.isfinite(y)
    ]
    if len(points) < 2:
        return ["(not enough points to plot)"]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    y1 = min(y1, y0 + 4 * (points[0][1] - y0 + 1e-12) + 1e-12)  # clip the divergence tail
    grid = [[" "] * width for _ in range(height)]
    for x, y in points:
        col = int((x - x0) / max(x1 - x0, 1e-12) * (width - 1))
        row = int((min(y, y1) - y0) / max(y1 - y0, 1e-12) * (height - 1))
        grid[height - 1 - row][col] = "*"
    lines = []
    for i, row_cells in enumerate(grid):
        label = y1 - (y1 - y0) * i / max(height - 1, 1)
        lines.append(f"{label:9.3g} |" + "".join(row_cells))
    lines.append(" " * 10 + "+" + "-" * width)
    lines.append(" " * 11 + f"{10**x0:<.0e}".ljust(width - 6) + f"{10**x1:.0e}")
    lines.append(" " * 11 + "learning rate (log scale)")
    return lines


def cmd_lr_find(args: argparse.Namespace) -> int:
    from tuidebug.supervisor.child import script_error

    problem = script_error(args.script)
    if problem:
        return _fail(problem)
    options: dict[str, Any] = {
        "lr_find": {
            "steps": args.steps,
            "start": args.start,
            "end": args.end,
            "exit": True,
        },
        "checks": False,
        "pause_on_nonfinite": False,
        "gpu_interval": 5.0,
    }
    try:
        paths = start_run(args.script, list(args.script_args), options)
    except RuntimeError as error:
        return _fail(str(error))
    code, _timed_out = wait_for_end(paths, args.timeout)
    found = read_findings(paths)
    result = found["lr_find"]
    if result is None:
        failure = found["error"]
        why = f": {failure.exc_type}: {failure.text}" if failure else f" (exit code {code})"
        notes = "; ".join(n.text for n in found["notices"])
        return _fail(f"no range test result{why}{' - ' + notes if notes else ''}")
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": paths.run_id,
                    "lrs": result.lrs,
                    "losses": result.losses,
                    "suggested": result.suggested,
                    "restored": result.restored,
                    "note": result.note,
                },
                indent=2,
            )
        )
        return 0
    from rich.console import Console

    console = Console()
    console.print(f"[bold]learning-rate range test[/bold]: {args.script} ({len(result.lrs)} steps)")
    for line in plot_text(result.lrs, result.losses):
        console.print(line, markup=False, highlight=False)
    if result.note:
        console.print(f"[dim]{result.note}[/dim]")
    if result.suggested is not None:
        console.print(f"suggested learning rate: [bold green]{result.suggested:.2e}[/bold green]")
    else:
        console.print("[yellow]no clear descent: no rate suggested[/yellow]")
    console.print(
        "[dim]the model and optimizer state were restored after the test[/dim]"
        if result.restored
        else "[red]the state could not be fully restored[/red]"
    )
    return 0


# --- parsers ------------------------------------------------------------------------------------


def add_parsers(commands: Any) -> None:
    rules = ", ".join(sorted(RULES))
    check = commands.add_parser(
        "check",
        help="run a script headless for N steps with every training-bug rule on (for CI)",
        description="Run SCRIPT for N steps with every training-bug rule on, print a report, "
        "and exit 0 when clean, 1 when a rule fired at or above --fail-on, 2 when the script "
        "itself failed. Options go before SCRIPT; a --steps N among the script's own arguments "
        f"is used when none is given here. Rules: {rules}.",
    )
    check.add_argument("--steps", type=int, default=0, metavar="N", help="steps to run (100)")
    check.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        default=None,
        help="lowest severity that fails the check (default: warning, or [tool.tuidebug] fail-on)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="EXPR",
        help="fail (exit 1, one-line reason) unless EXPR holds on the run: 'loss < 0.5', "
        "'val_loss < 1.0' (any logged scalar), 'loss@100 < 1.2' (the value at step 100), "
        f"'loss decreases'. At the end, 'loss' is the mean of the last {TAIL} steps' losses "
        "(one batch is noise) and another scalar its last logged value; 'decreases' compares "
        f"that with the mean of the first {TAIL} (a scalar: its first value). Repeatable; "
        "replaces [tool.tuidebug] expect",
    )
    # --- the ratchet's options
    check.add_argument(
        "--baseline",
        default=None,
        metavar="RUN",
        help="compare the loss curve with a stored run's (a run id, id prefix or run folder), "
        "step by step: fail (exit 1, one-line reason) when the loss at the last common step, "
        "as a mean of the last 10 steps on both curves, is worse by more than --tolerance; "
        "the report names the first step where the curves diverge",
    )
    check.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        metavar="FRAC",
        help="relative tolerance of --baseline (default 0.10: 10%% higher loss fails)",
    )
    # --- end of the ratchet's options
    check.add_argument(
        "--ignore", action="append", default=[], metavar="RULE", help="silence a rule (repeatable)"
    )
    check.add_argument(
        "--overfit-batch",
        action="store_true",
        help="feed the first batch of every DataLoader again on every step and report whether "
        "the loss approaches zero",
    )
    check.add_argument(
        "--every", type=int, default=5, metavar="N", help="sample one step in N (default 5)"
    )
    check.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="stop the script after S seconds"
    )
    check.add_argument("script", help="the training script")
    check.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    check.set_defaults(func=cmd_check)

    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test on the script's own loop (state restored afterwards)",
        description="Run SCRIPT and, from its first step, raise the learning rate exponentially "
        "over N steps, recording the loss; then restore the model and optimizer state, plot "
        "loss against rate and suggest a rate.",
    )
    lr_find.add_argument("--steps", type=int, default=100, metavar="N", help="test steps (100)")
    lr_find.add_argument("--start", type=float, default=1e-7, help="first rate (1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last rate (10)")
    lr_find.add_argument("--json", action="store_true", help="print the result as JSON")
    lr_find.add_argument("--timeout", type=float, default=600.0, metavar="S")
    lr_find.add_argument("script", help="the training script")
    lr_find.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    lr_find.set_defaults(func=cmd_lr_find)
