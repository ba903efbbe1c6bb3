"""Runs a user's script with the probe installed.

``python -m tuidebug.probe.bootstrap SCRIPT ARGS`` is how the supervisor starts the script.
The script must not be able to tell the difference
from ``python SCRIPT ARGS``: it sees its own ``sys.argv``, ``__name__ == "__main__"``, its own
folder first on ``sys.path``, the working directory and environment it was started with (the
probe's variables are taken out of ``os.environ`` before the script runs).

If the supervisor cannot be reached, the script runs anyway, without the probe.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path
from types import TracebackType

from tuidebug.probe import debugger, extensions, rank_io, runtime
from tuidebug.probe.conditions import ConditionError
from tuidebug.probe.link import Link, LinkError
from tuidebug.probe.probe import Probe
from tuidebug.wire.messages import RankEnded

ENV_SOCKET = "TUIDEBUG_SOCKET"
ENV_TOKEN_FILE = "TUIDEBUG_TOKEN_FILE"
ENV_OUTPUT_LOG = "TUIDEBUG_OUTPUT_LOG"
ENV_BREAK_ON = "TUIDEBUG_BREAK_ON"  # conditions, one per line (tuidebug run --break-on)
ENV_HOLD_ON_ERROR = "TUIDEBUG_HOLD_ON_ERROR"  # "1": wait for a post-mortem before exiting
ENV_OPTIONS = "TUIDEBUG_OPTIONS"  # JSON: the run's options for the probe's extensions
PROBE_VARIABLES = (
    ENV_SOCKET,
    ENV_TOKEN_FILE,
    ENV_OUTPUT_LOG,
    ENV_BREAK_ON,
    ENV_HOLD_ON_ERROR,
    ENV_OPTIONS,
    rank_io.ENV_RANK_TTYS,
)


def _connect(probe_env: dict[str, str]) -> Probe:
    """The probe, connected to the supervisor when the environment says where it is."""
    rank = int(os.environ.get("RANK", "0") or 0)
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    probe = Probe(None, rank=rank, world_size=world_size)
    socket_path = probe_env.get(ENV_SOCKET)
    token_file = probe_env.get(ENV_TOKEN_FILE)
    if not socket_path or not token_file:
        return probe
    try:
        token = Path(token_file).read_text().strip()
        probe.link = Link.connect(socket_path, token, rank, world_size, probe.handle_command)
    except (OSError, LinkError) as error:
        print(f"tuidebug: running without the console ({error})", file=sys.stderr)
    return probe


def _survive_hangup(output_log: str | None) -> None:
    """If the supervisor dies, its pty hangs up: keep training, writing output to the log.

    The pty is ours, never the user's SSH terminal (the script runs in a session of its own), so
    a hangup can only mean the supervisor is gone. By default SIGHUP would kill the run, and
    every later print would fail; instead stdio moves to the run's output log (or /dev/null).
    A script that installs its own SIGHUP handler replaces this one.
    """

    def on_hangup(_signum: int, _frame: object) -> None:
        target = os.open(output_log or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(target, 1)
        os.dup2(target, 2)
        os.close(target)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)

    signal.signal(signal.SIGHUP, on_hangup)


def _user_traceback(script: str, tb: TracebackType | None) -> TracebackType | None:
    """Skip the bootstrap's and runpy's frames so the traceback starts in the user's script."""
    target = os.path.realpath(script)
    cursor = tb
    while cursor is not None:
        if os.path.realpath(cursor.tb_frame.f_code.co_filename) == target:
            return cursor
        cursor = cursor.tb_next
    return tb


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m tuidebug.probe.bootstrap SCRIPT [ARGS...]", file=sys.stderr)
        sys.exit(2)
    script = args[0]
    previous_breakpointhook = sys.breakpointhook
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    probe_env = {key: os.environ.pop(key) for key in PROBE_VARIABLES if key in os.environ}
    rank_io.take_rank_tty(probe_env.get(rank_io.ENV_RANK_TTYS))
    if ENV_SOCKET in probe_env:
        _survive_hangup(probe_env.get(ENV_OUTPUT_LOG))

    probe = _connect(probe_env)
    runtime.install(probe)
    probe.install_auto_hooks()
    live = probe.link is not None
    # A rank of a job the supervisor launched (it gave each rank a pty): ranks pause together.
    probe.gate.collective = live and rank_io.ENV_RANK_TTYS in probe_env and probe.world_size > 1
    if live:
        sys.breakpointhook = debugger.breakpoint_hook(probe.gate.notify_breakpoint)
        for text in filter(None, probe_env.get(ENV_BREAK_ON, "").splitlines()):
            try:
                probe.gate.add_condition(text)
            except ConditionError as error:
                print(f"tuidebug: --break-on: {error}", file=sys.stderr)
        try:
            options = json.loads(probe_env.get(ENV_OPTIONS) or "{}")
        except ValueError:
            options = {}
        if isinstance(options, dict) and probe_env.get(ENV_OUTPUT_LOG):
            # The run folder (output.log's parent): where checkpoints go by default.
            options.setdefault("run_folder", os.path.dirname(probe_env[ENV_OUTPUT_LOG]))
        extensions.install_all(probe, options if isinstance(options, dict) else {})
    hold = live and probe_env.get(ENV_HOLD_ON_ERROR) == "1"

    sys.argv = args
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    exit_code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as error:
        exit_code = rank_io.exit_status(error.code)
        raise
    except KeyboardInterrupt:
        exit_code = 130
        raise
    except BaseException as error:
        exit_code = 1
        text = "".join(
            traceback.format_exception(
                type(error), error, _user_traceback(script, error.__traceback__)
            )
        )
        sys.stderr.write(text)
        sys.stderr.flush()
        probe.report_error(error, text, held=hold)
        if hold:
            print(
                "tuidebug: the run is held after the error: press d in the console for a "
                "post-mortem debugger, q to let it exit",
                file=sys.stderr,
                flush=True,
            )
            probe.gate.hold_after_error(error.__traceback__)
        sys.exit(1)
    finally:
        try:
            # The last boundary can end the script (`tuidebug check --steps N` raises
            # SystemExit there): what follows must still run, or the link's last batch of
            # steps dies with its thread.
            probe.finish()
        finally:
            probe.remove_hooks()
            sys.breakpointhook = previous_breakpointhook
            runtime.install(None)
            if probe.link is not None:
                if probe.world_size > 1:  # a job: the supervisor shows each rank's end
                    probe.send(RankEnded(rank=probe.rank, step=probe.step, exit_code=exit_code))
                probe.link.close()


if __name__ == "__main__":
    main()
