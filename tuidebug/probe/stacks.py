"""Every thread's stack, read on the probe's I/O thread while the training thread goes on.

``sys._current_frames()`` gives the frame each thread is at; the walk reads only code objects
and line numbers (file, line, function name) and the source line from ``linecache``: never a
local variable, never a ``repr`` of a user object, so it runs no user code and cannot block on
the training thread's state. It needs the GIL for a moment, which a thread stuck in a
collective or in ``time.sleep`` has released; a process whose GIL is held by C code does not
answer, and the supervisor falls back to faulthandler (``probe/extensions/stacks.py``).
"""

from __future__ import annotations

import linecache
import logging
import os
import sys
import threading
import time
from types import FrameType

from tuidebug.wire.stack_messages import (
    MAX_CODE,
    MAX_FRAMES,
    MAX_PATH,
    MAX_THREADS,
    Frame,
    Stacks,
    ThreadStack,
)

log = logging.getLogger("tuidebug.probe")

_COUNT_LIMIT = 10_000  # outer frames counted beyond MAX_FRAMES (a runaway recursion stops here)


def answer(rank: int, request: str, step: int = 0) -> Stacks:
    """:func:`collect`, or a ``Stacks`` whose note says why not: it runs on the I/O thread,
    which must never die of it."""
    try:
        return collect(rank, request, step)
    except Exception as error:
        log.warning("tuidebug: could not read the stacks: %r", error)
        return Stacks(
            rank=rank,
            step=step,
            request=request,
            pid=os.getpid(),
            time=time.time(),
            note=f"could not read the stacks: {error!r}",
        )


def collect(rank: int, request: str, step: int = 0) -> Stacks:
    """The stacks of every thread but the caller's own (the I/O thread asking)."""
    own = threading.get_ident()
    main = threading.main_thread().ident
    by_ident = {t.ident: t for t in threading.enumerate()}
    threads: list[ThreadStack] = []
    left_out = 0
    for ident, frame in sys._current_frames().items():
        if ident == own:
            continue
        if len(threads) >= MAX_THREADS:
            left_out += 1
            continue
        thread = by_ident.get(ident)
        frames, omitted = walk(frame)
        threads.append(
            ThreadStack(
                name=thread.name if thread is not None else f"thread 0x{ident:x}",
                ident=ident,
                training=ident == main,
                daemon=bool(thread is not None and thread.daemon),
                frames=frames,
                omitted=omitted,
            )
        )
    note = f"{left_out} thread(s) not shown (more than {MAX_THREADS})" if left_out else ""
    return Stacks(
        rank=rank,
        step=step,
        request=request,
        pid=os.getpid(),
        time=time.time(),
        source="python",
        threads=threads,
        note=note,
    )


def walk(frame: FrameType | None) -> tuple[list[Frame], int]:
    """The innermost ``MAX_FRAMES`` frames from ``frame`` outwards, returned outermost first,
    and how many outer ones were left out."""
    frames: list[Frame] = []
    omitted = 0
    while frame is not None:
        if len(frames) < MAX_FRAMES:
            code = frame.f_code
            line = frame.f_lineno or 0
            file = code.co_filename
            frames.append(
                Frame(
                    file=file[:MAX_PATH],
                    line=line,
                    function=getattr(code, "co_qualname", code.co_name),
                    code=source_line(file, line),
                )
            )
        elif omitted < _COUNT_LIMIT:
            omitted += 1
        else:
            break
        frame = frame.f_back
    frames.reverse()
    return frames, omitted


def source_line(file: str, line: int) -> str:
    """The stripped source line (``""`` when the file cannot be read): from disk only, no
    module loader (that could import or run code)."""
    if line <= 0:
        return ""
    return linecache.getline(file, line).strip()[:MAX_CODE]
