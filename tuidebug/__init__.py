"""tuidebug: a terminal console for debugging PyTorch training runs.

The public face inside a training script is :func:`attach`::

    import tuidebug
    dbg = tuidebug.attach(model, optimizer)
    for batch in loader:
        ...
        dbg.step(loss=loss, lr=scheduler.get_last_lr()[0])

Outside ``tuidebug run`` the returned hook is inert and costs well under two microseconds a
call, so it can stay in a script for good.
"""

from __future__ import annotations

from tuidebug.probe.hook import Hook, attach

__all__ = ["Hook", "attach"]
__version__ = "0.1.0"
