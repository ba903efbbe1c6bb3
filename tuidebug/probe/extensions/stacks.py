"""The stacks of a rank whose Python does not answer: faulthandler on a signal.

The probe's I/O thread answers a stacks request itself (``probe/stacks.py``), but it needs the
GIL, and C code that holds it (a long computation in an extension that never releases it) keeps
it from answering. For that case this extension registers ``faulthandler`` at start for
:func:`~tuidebug.wire.stack_messages.dump_signal`: the handler is C, runs in the signal's
context without the GIL, and writes every thread's Python stack to ``<run folder>/stacks/
<pid>.txt``. The supervisor sends the signal only to a rank that did not answer in time, and
only when that file exists (it is the sign that the handler is there: the signal's default
action would end the process).

The file starts with one line the supervisor reads: ``tuidebug-stacks pid=P rank=R main=0xI``
(``main`` names the training thread, which a faulthandler dump does not).

Cost: one registration at start; nothing per step. A script that already handles the signal
keeps its handler, and then has no dump.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tuidebug.wire.stack_messages import DUMP_FOLDER, dump_signal

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")

HEADER = "tuidebug-stacks"

_dump_file: IO[str] | None = None  # faulthandler writes to its descriptor: kept open for good


def dump_path(run_folder: str | os.PathLike[str], pid: int) -> Path:
    """Where the process ``pid`` of a run dumps its stacks."""
    return Path(run_folder) / DUMP_FOLDER / f"{pid}.txt"


def install(probe: Probe, options: dict[str, Any]) -> None:
    global _dump_file
    folder = options.get("run_folder")
    if not folder or _dump_file is not None:
        return
    signum = dump_signal()
    if signal.getsignal(signum) not in (signal.SIG_DFL, None):
        log.info("tuidebug: signal %d is the script's; no faulthandler stacks", signum)
        return
    path = dump_path(folder, os.getpid())
    path.parent.mkdir(mode=0o700, exist_ok=True)
    # Written under another name and renamed once the handler is in: the file's existence is
    # what tells the supervisor that the signal is safe to send.
    partial = path.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    handle = os.fdopen(descriptor, "w")
    try:
        main = threading.main_thread().ident or 0
        handle.write(f"{HEADER} pid={os.getpid()} rank={probe.rank} main=0x{main:x}\n")
        handle.flush()
        faulthandler.register(signum, file=handle, all_threads=True, chain=False)
    except BaseException:
        handle.close()
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    _dump_file = handle
