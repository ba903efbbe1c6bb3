"""Starting the training script on a pseudo-terminal that the supervisor owns.

The script gets a real terminal (so progress bars render, colours stay on, and a debugger has a
tty to talk to), in its own session with the pty as its controlling terminal. The supervisor
keeps the master side and reads everything the script writes.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

DEFAULT_COLS = 120
DEFAULT_ROWS = 40


def set_winsize(fd: int, cols: int, rows: int) -> None:
    """Tell the pty its size (the script sees it through ``os.get_terminal_size``)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _make_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn_on_pty(
    script: str,
    args: list[str],
    cwd: str,
    env: dict[str, str],
    command: list[str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m tuidebug.probe.bootstrap script args`` (or ``command``) on a new pty.

    Returns the process and the master fd (non-blocking). The slave side is closed here, so
    reading the master reports end of file once the script and its children have exited.
    """
    master, slave = pty.openpty()
    set_winsize(master, DEFAULT_COLS, DEFAULT_ROWS)
    if command is None:
        command = [sys.executable, "-m", "tuidebug.probe.bootstrap", script, *args]
    try:
        process = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_make_controlling_tty,
            close_fds=True,
        )
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return process, master


def open_rank_ptys(count: int) -> list[tuple[int, int]]:
    """One pty per local rank of a job: ``(master, slave)`` pairs, masters non-blocking.

    The supervisor keeps the slaves open for the whole run: a rank opens its own by path (see
    probe/rank_io.py), and a master whose every slave is closed would read EIO, over and over,
    between a rank's start and its open, or after a restart."""
    pairs = []
    for _ in range(count):
        master, slave = pty.openpty()
        set_winsize(master, DEFAULT_COLS, DEFAULT_ROWS)
        os.set_blocking(master, False)
        pairs.append((master, slave))
    return pairs


def torchrun_command(torchrun_args: list[str], script: str, args: list[str]) -> list[str]:
    """torch's own launcher, running the probe's bootstrap as the module of every rank."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *torchrun_args,
        "-m",
        "tuidebug.probe.bootstrap",
        script,
        *args,
    ]


def script_error(script: str) -> str | None:
    """A one-line reason why ``script`` cannot run (missing, unreadable, syntax), else None."""
    path = Path(script)
    if not path.exists():
        return f"no such script: {script}"
    if path.is_dir():
        return f"{script} is a folder, not a Python script"
    try:
        source = path.read_bytes()
    except OSError as error:
        return f"cannot read {script}: {error.strerror}"
    try:
        compile(source, script, "exec")
    except SyntaxError as error:
        where = f"{error.filename}:{error.lineno}" if error.lineno else script
        return f"{where}: SyntaxError: {error.msg}"
    except ValueError as error:  # e.g. null bytes
        return f"{script}: {error}"
    return None
