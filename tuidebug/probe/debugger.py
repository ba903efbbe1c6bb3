"""ipdb inside the live run, at the user's own frame.

The debugger runs on the training thread, on the script's terminal (the supervisor's pty); the
console hands its own terminal over to that pty while the debugger is open. Three ways in:
- ``open_at(frame)``: the run is paused at a step boundary and the person pressed ``d``. The
  frame is the user's training loop (the caller of ``optimizer.step()``, ``backward()`` or
  ``dbg.step()``), so its locals (model, batch, loss, ...) are there to print and change;
- the script's own ``breakpoint()``, through ``sys.breakpointhook``;
- ``post_mortem(tb)`` after the script raised.

Extra commands in the session: ``lt EXPR`` prints a tensor in one line (shape, dtype, device,
statistics), ``tensors`` lists every tensor among the frame's locals that way.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIPPED_MODULES = ("runpy", "functools", "contextlib", "threading")

Notify = Callable[[str, str, bool | None], None]
"""notify(event, where, continued): event is "opened:<kind>" or "closed"."""


# Packages whose frames are never "the user's line": torch, and the training frameworks whose
# callbacks the integrations pause in (the pause lands on the script's trainer.fit() line).
_LIBRARIES = (
    "torch",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",  # also matched by "lightning" as a prefix, but imported on its own too
    "transformers",
    "accelerate",
)


def _library_dirs() -> tuple[str, ...]:
    dirs = [_PACKAGE_DIR]
    for name in _LIBRARIES:
        init = getattr(sys.modules.get(name), "__file__", None)
        if init:
            dirs.append(os.path.dirname(os.path.abspath(init)))
    return tuple(dirs)


def user_frame(start: FrameType | None = None) -> FrameType | None:
    """The innermost frame that belongs to the user's code (not torch's, not ours)."""
    frame: FrameType | None = start or sys._getframe(1)
    libraries = _library_dirs()
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        module = frame.f_globals.get("__name__", "")
        if (
            not filename.startswith(libraries)
            and not filename.startswith("<frozen")
            and module.split(".")[0] not in _SKIPPED_MODULES
        ):
            return frame
        frame = frame.f_back
    return None


def where(frame: FrameType | None) -> str:
    """``file:line in function`` of a frame, for messages."""
    if frame is None:
        return ""
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def describe(value: Any) -> str:
    """One line about a value; for a tensor: shape, dtype, device and statistics."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        text = repr(value)
        return text if len(text) < 200 else text[:197] + "..."
    shape = "x".join(str(s) for s in value.shape) or "scalar"
    head = f"tensor[{shape}] {str(value.dtype).replace('torch.', '')} {value.device}"
    if value.requires_grad:
        head += " grad"
    if value.numel() == 0:
        return head + " empty"
    data = value.detach()
    if not (data.is_floating_point() or data.is_complex()):
        data = data.double()
    finite = torch.isfinite(data)
    nonfinite = int((~finite).sum())
    values = data[finite].double()
    if values.numel() == 0:
        return f"{head} all {nonfinite} values non-finite"
    parts = [
        f"x∈[{values.min().item():.4g}, {values.max().item():.4g}]",
        f"μ={values.mean().item():.4g}",
    ]
    if values.numel() > 1:
        parts.append(f"σ={values.std().item():.4g}")
    zeros = int((values == 0).sum())
    if zeros:
        parts.append(f"zeros {zeros / value.numel():.1%}")
    if nonfinite:
        nans = int(torch.isnan(data).sum())
        parts.append(f"NaN {nans} Inf {nonfinite - nans}")
    if value.numel() <= 8:
        parts.append(str([round(v, 5) if math.isfinite(v) else v for v in values.tolist()]))
    return head + " " + " ".join(parts)


def _new_debugger(notify: Notify) -> Any:
    """A debugger that leaves SIGINT alone: pdb's `c` would otherwise turn Ctrl-C (and the
    console's "stop the run") into a new debugger prompt instead of a KeyboardInterrupt."""
    return _debugger_class(notify)(nosigint=True)


def _debugger_class(notify: Notify) -> type:
    from ipdb.__main__ import _get_debugger_cls

    base = _get_debugger_cls()

    class TuidebugPdb(base):  # type: ignore[misc, valid-type]
        """IPython's debugger with tensor summaries, telling the console when it is done."""

        def do_lt(self, arg: str) -> None:
            """lt EXPR: one line about EXPR (shape, dtype, device, statistics for tensors)."""
            try:
                value = eval(arg, self.curframe.f_globals, self.curframe_locals)
            except Exception as error:
                self.error(f"{type(error).__name__}: {error}")
                return
            self.message(describe(value))

        def do_tensors(self, arg: str) -> None:
            """tensors: every tensor among the current frame's locals, one line each."""
            torch = sys.modules.get("torch")
            found = False
            for name, value in sorted(self.curframe_locals.items()):
                if torch is not None and isinstance(value, torch.Tensor):
                    self.message(f"{name}: {describe(value)}")
                    found = True
            if not found:
                self.message("no tensors among the locals")

        def do_continue(self, arg: str) -> Any:
            notify("closed", "", True)
            return super().do_continue(arg)

        do_c = do_cont = do_continue

        def do_quit(self, arg: str) -> Any:
            notify("closed", "", False)
            return super().do_quit(arg)

        do_q = do_exit = do_quit

    return TuidebugPdb


BANNER = (
    "\x1b[1mtuidebug\x1b[0m: ipdb at {where} (step {step}).  "
    "c: continue the run  q: back to the console (run stays paused)  "
    "lt EXPR: tensor summary  tensors: all tensor locals\n"
)


def open_at(frame: FrameType, step: int, notify: Notify) -> bool:
    """Run an ipdb session at ``frame`` until the person continues or quits.

    Returns True when the person asked the run to continue (``c``), False to stay paused.
    """
    debugger = _new_debugger(notify)
    sys.stdout.write(BANNER.format(where=where(frame), step=step))
    sys.stdout.flush()
    debugger.reset()
    try:
        debugger.interaction(frame, None)
    finally:
        _write_back_locals(frame)
    return not getattr(debugger, "quitting", False)


def post_mortem(tb: TracebackType, notify: Notify) -> None:
    """A post-mortem ipdb session on the traceback of the script's exception."""
    debugger = _new_debugger(notify)
    debugger.reset()
    debugger.interaction(None, tb)


def breakpoint_hook(notify: Notify) -> Callable[..., Any]:
    """A ``sys.breakpointhook`` that tells the console, then behaves like ``ipdb.set_trace``."""

    def hook(*args: Any, **kwargs: Any) -> Any:
        setting = os.environ.get("PYTHONBREAKPOINT", "")
        if setting == "0":
            return None
        frame = sys._getframe(1)
        notify("opened:breakpoint", where(frame), None)
        if setting and setting not in ("ipdb.set_trace", "pdb.set_trace"):
            return sys.__breakpointhook__(*args, **kwargs)
        debugger = _new_debugger(notify)
        debugger.set_trace(frame)
        return None

    return hook


def _write_back_locals(frame: FrameType) -> None:
    """Make assignments made in the debugger stick in a function frame (Python < 3.13).

    Before PEP 667, ``frame.f_locals`` of a function is a snapshot dict; the debugger writes
    into it, and this copies it back into the frame's fast locals. Module-level code (a
    script's loop at top level) needs nothing: its locals are its globals.
    """
    if sys.version_info >= (3, 13) or frame.f_code.co_flags & 0x0001 == 0:  # CO_OPTIMIZED
        return
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
