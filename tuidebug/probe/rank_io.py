"""The bits of the bootstrap that only a rank of a ``torchrun`` job needs.

Each rank gets a terminal of its own: the supervisor opens one pty per local rank and passes
the slaves' paths in ``TUIDEBUG_RANK_TTYS`` (``os.pathsep``-separated, by ``LOCAL_RANK``). The
rank moves its stdio onto its pty before the script runs, so that its output reaches the
supervisor marked with its rank by construction (no parsing, no prefix written into the
script's bytes) and ipdb in that rank has a real terminal of its own. torchrun starts each rank
in a session of its own, so opening the pty makes it the rank's controlling terminal: a hangup
(the supervisor died) reaches the rank as SIGHUP, which the bootstrap already survives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import termios

ENV_RANK_TTYS = "TUIDEBUG_RANK_TTYS"


def take_rank_tty(ttys: str | None) -> None:
    """Move stdin, stdout and stderr onto this local rank's pty (nothing when there is none)."""
    if not ttys:
        return
    paths = ttys.split(os.pathsep)
    try:
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return
    if not 0 <= local < len(paths):
        return
    try:
        fd = os.open(paths[local], os.O_RDWR)
    except OSError as error:
        print(f"tuidebug: rank output stays on the launcher's terminal ({error})", file=sys.stderr)
        return
    with contextlib.suppress(OSError):  # already ours when opened by a session leader
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    sys.stdout.flush()
    sys.stderr.flush()
    for target in (0, 1, 2):
        os.dup2(fd, target)
    os.close(fd)


def exit_status(code: object) -> int:
    """The process's exit status for ``SystemExit(code)``, as Python computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1  # a message: Python prints it and exits with 1
