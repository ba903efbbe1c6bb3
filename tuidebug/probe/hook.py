"""The hook object a script holds: ``dbg = tuidebug.attach(model, optimizer)``.

Outside ``tuidebug run`` there is no probe, and ``attach`` returns an inert ``Hook`` whose
methods return at once. Under ``tuidebug run`` it returns the live probe's hook, which makes
``dbg.step()`` the step boundary and names the models and optimizers explicitly.
"""

from __future__ import annotations

from typing import Any

from tuidebug.probe import runtime
from tuidebug.probe.hook_api import Hook

__all__ = ["Hook", "attach"]

_INERT = Hook()


def attach(*objects: Any, **options: Any) -> Hook:
    """Return the run's hook, following ``objects`` (models, optimizers, schedulers, scalers).

    Under ``tuidebug run`` this is the live probe; anywhere else an inert hook.
    """
    probe = runtime.current()
    if probe is None:
        return _INERT
    return probe.attach(*objects, **options)
