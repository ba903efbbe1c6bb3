"""torch.compile under the probe: which models are compiled, and a sampled step run eagerly.

Facts of torch 2.13 that shape this (measured in docs/layers.md, "torch.compile"):
- dynamo guards on the number of hooks: the global forward (pre-)hooks and the hooks of every
  module it traces. Adding or removing one after a compile makes the next call recompile (a
  fresh graph per arming of a sampled step: the recompile limit is hit within a few samples).
- a hook present while dynamo traces is traced into the graph; the probe's Python (clocks,
  the C statistics kernel) breaks the graph there.
- ``torch.compiler.set_stance("force_eager")`` runs compiled code eagerly without evaluating
  guards, and the stance set back finds the cached graph still valid: no recompile.

So the probe never changes a hook count inside a compiled region while it runs compiled: the
model-finding global hook goes at the script's first ``torch.compile`` call (before any
compiled call), a compiled model's every-step hook goes on the eager wrapper
(``torch.compile(model)``'s ``OptimizedModule``) or nowhere (``model.compile()``), and layer
statistics of a compiled model are taken on steps run under the eager stance only.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

__all__ = ["CompiledModules", "EagerStance", "unwrap"]


def unwrap(module: Any) -> tuple[Any, Any]:
    """``(the module, its eager entry)``: for ``torch.compile(model)``'s wrapper, the original
    model and the wrapper; for any other module, itself and None."""
    inner = getattr(module, "_orig_mod", None)
    if inner is not None and type(module).__name__ == "OptimizedModule":
        return inner, module
    return module, None


class CompiledModules:
    """The modules the script compiled, each with the module whose call stays eager (the
    ``OptimizedModule`` of ``torch.compile(model)``; None for ``model.compile()``)."""

    def __init__(self) -> None:
        self._noted: dict[int, tuple[weakref.ref[Any], weakref.ref[Any] | None]] = {}

    def note(self, module: Any, entry: Any = None) -> None:
        """Remember ``module`` as compiled (``entry``: the wrapper whose call is eager)."""
        old = self._noted.get(id(module))
        if old is not None and old[0]() is module and (entry is None or old[1] is not None):
            return
        self._noted[id(module)] = (
            weakref.ref(module),
            weakref.ref(entry) if entry is not None else None,
        )

    def modules(self) -> list[Any]:
        """The live modules noted as compiled."""
        return [m for m in (ref() for ref, _ in list(self._noted.values())) if m is not None]

    def is_compiled(self, module: Any) -> bool:
        """Compiled with ``torch.compile(module)`` or ``module.compile()`` (seen or not)."""
        noted = self._noted.get(id(module))
        if noted is not None and noted[0]() is module:
            return True
        return getattr(module, "_compiled_call_impl", None) is not None

    def entry(self, module: Any) -> Any:
        """The eager wrapper of a compiled ``module``, or None."""
        noted = self._noted.get(id(module))
        if noted is None or noted[0]() is not module or noted[1] is None:
            return None
        return noted[1]()


class EagerStance:
    """``torch.compiler.set_stance("force_eager")`` for as long as it is entered, then the
    stance the script had. A no-op when dynamo was never imported (nothing is compiled)."""

    def __init__(self) -> None:
        self._context: Any = None

    @property
    def active(self) -> bool:
        return self._context is not None

    def enter(self) -> None:
        if self._context is not None:
            return
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return
        # Calling set_stance sets it at once; the object keeps the previous one for __exit__.
        self._context = dynamo.set_stance("force_eager")

    def exit(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(None, None, None)
