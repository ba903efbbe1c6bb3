"""Zero-code-change instrumentation through torch's global hooks.

Three hooks, each owned here and removed in ``remove()``:
- torch's global optimizer step post-hook: every ``optimizer.step()`` of any optimizer;
- a wrapper around ``torch.autograd.backward`` (which ``Tensor.backward`` calls): the scalar a
  script backpropagates is its loss, and its return ends the backward phase of the step-time
  breakdown. Torch has no global hook for this, so the function is wrapped for as long as the
  probe lives and put back on removal;
- a global module forward pre-hook, only until the first step ends: the modules called during
  that step tell which root modules (the models) the script trains. It is removed right after,
  because a global forward hook costs a few microseconds on every module call.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

_is_compiling = torch.compiler.is_compiling  # True while dynamo traces (a constant to it)


class StepEvents(Protocol):
    """What the hooks report to (the probe): a protocol, so these hooks, which the probe
    installs, do not depend on the probe module."""

    def on_backward(self, tensor: Any) -> None: ...

    def on_backward_end(self) -> None: ...

    def on_optimizer_step(self, optimizer: Any) -> None: ...

    def on_models_found(self, modules: list[Any]) -> None: ...


class AutoHooks:
    """The global hooks of one probe."""

    def __init__(self, probe: StepEvents) -> None:
        self._probe = probe
        self._called: dict[int, torch.nn.Module] = {}
        self._discovery: RemovableHandle | None = register_module_forward_pre_hook(
            self._on_module_call
        )
        self._optimizer_hook: RemovableHandle | None = register_optimizer_step_post_hook(
            self._on_optimizer_step
        )
        self._original_backward = torch.autograd.backward
        self._patched_backward = self._make_backward(self._original_backward)
        torch.autograd.backward = self._patched_backward

    def _make_backward(self, original: Any) -> Any:
        probe = self._probe

        @functools.wraps(original)
        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            probe.on_backward(tensors)
            try:
                return original(tensors, *args, **kwargs)
            finally:  # the backward phase of the step-time breakdown ends here (phases.py)
                probe.on_backward_end()

        return backward

    def _on_module_call(self, module: torch.nn.Module, _args: Any) -> None:
        # Inside a compiled region dynamo would trace this hook (a dict of modules it cannot
        # track: torch 2.13 raises an internal error there). The compiled module itself is
        # called eagerly (torch.compile's wrapper, or model.compile()'s module), and that call
        # is enough to find the root: the calls dynamo traces are left out (docs/layers.md).
        if _is_compiling():
            return
        # Keep references only until the first step ends; then they are resolved and dropped.
        self._called.setdefault(id(module), module)

    def _on_optimizer_step(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        self._probe.on_optimizer_step(optimizer)

    def first_step_done(self) -> None:
        """Stop watching module calls and report the root modules that have parameters."""
        if self._discovery is None:
            return
        self._discovery.remove()
        self._discovery = None
        called, self._called = self._called, {}
        inner: set[int] = set()
        for module in called.values():
            inner.update(id(m) for m in module.modules() if m is not module)
        roots = [
            m for key, m in called.items() if key not in inner and any(True for _ in m.parameters())
        ]
        self._probe.on_models_found(roots)

    def remove(self) -> None:
        """Remove every hook and restore ``torch.autograd.backward`` if it is still ours."""
        if self._discovery is not None:
            self._discovery.remove()
            self._discovery = None
        if self._optimizer_hook is not None:
            self._optimizer_hook.remove()
            self._optimizer_hook = None
        if torch.autograd.backward is self._patched_backward:
            torch.autograd.backward = self._original_backward
        self._called = {}
