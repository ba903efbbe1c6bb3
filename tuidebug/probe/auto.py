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

Two wrappers for torch.compile and mixed precision, owned the same way:
- ``torch.compile`` (which ``Module.compile`` calls too): the modules a script compiles are
  models, and the model-finding global hook goes at the first call, before anything compiled
  runs: dynamo guards on the number of global hooks (removing it after a compile would
  recompile) and traces a hook present while it compiles (compiled.py). The models of such a
  run are the compiled ones, those called before the first compile, and the modules owning
  the optimizers' parameters (a scan of the live objects, once, at the first boundary);
- ``GradScaler.scale``/``step``/``update`` (amp.py): skipped steps, the scale, the unscaled loss.

And ``nn.Module.__getstate__`` (pickling.py): the probe's root-model hooks stay out of the
script's ``torch.save(model)`` and ``copy.deepcopy(model)``, which they used to break.
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any, Protocol

import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

from tuidebug.probe.amp import ScalerHooks
from tuidebug.probe.compiled import CompiledModules
from tuidebug.probe.pickling import HooklessPickling

_is_compiling = torch.compiler.is_compiling  # True while dynamo traces (a constant to it)
log = logging.getLogger("tuidebug.probe")


class StepEvents(Protocol):
    """What the hooks report to (the probe): a protocol, so these hooks, which the probe
    installs, do not depend on the probe module."""

    def on_backward(self, tensor: Any) -> None: ...

    def on_backward_end(self) -> None: ...

    def on_optimizer_step(self, optimizer: Any) -> None: ...

    def on_models_found(self, modules: list[Any]) -> None: ...

    compiled: CompiledModules

    def on_scaled(self, scaler: Any, loss: Any, scaled: Any) -> None: ...

    def on_scaler_step(self, scaler: Any, optimizer: Any, begin: bool) -> None: ...


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
        self._resolved = False  # the first step's models were reported
        self._cut = False  # the global hook went early, at the script's first torch.compile
        self._original_compile = torch.compile
        self._patched_compile = self._make_compile(self._original_compile)
        torch.compile = self._patched_compile
        self._scaler_hooks = ScalerHooks(probe)
        self._pickling = HooklessPickling()

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

    def _make_compile(self, original: Any) -> Any:
        hooks = self

        @functools.wraps(original)
        def compile(model: Any = None, *args: Any, **kwargs: Any) -> Any:
            result = original(model, *args, **kwargs)
            try:
                hooks._on_compile(model, result)
            except Exception:  # finding models must never stop a compile
                log.exception("tuidebug: following a torch.compile call failed")
            return result

        return compile

    def _on_compile(self, target: Any, result: Any) -> None:
        if target is None:  # @torch.compile(...) with arguments: called again with the function
            return
        self._stop_discovery()
        module = target if isinstance(target, torch.nn.Module) else None
        if module is None and isinstance(getattr(target, "__self__", None), torch.nn.Module):
            module = target.__self__  # Module.compile(): torch.compile(self._call_impl)
        if module is None:
            return
        entry = result if isinstance(result, torch.nn.Module) and result is not module else None
        self._probe.compiled.note(module, entry)

    def _stop_discovery(self) -> None:
        if self._discovery is not None:
            self._discovery.remove()
            self._discovery = None
            self._cut = not self._resolved

    def _on_module_call(self, module: torch.nn.Module, _args: Any) -> None:
        # The hook goes at the first torch.compile call (_on_compile); should dynamo trace it
        # anyway (a function compiled before the probe started), it must do nothing there:
        # tracing the dict of modules raises an internal error in torch 2.13.
        if _is_compiling():
            return
        # Keep references only until the first step ends; then they are resolved and dropped.
        self._called.setdefault(id(module), module)

    def _on_optimizer_step(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        self._probe.on_optimizer_step(optimizer)

    def first_step_done(self, optimizers: list[Any] | None = None) -> None:
        """Stop watching module calls and report the root modules that have parameters."""
        if self._resolved:
            return
        self._resolved = True  # first: the discovery ends on time here, not cut short
        self._stop_discovery()
        called, self._called = self._called, {}
        compiled = self._probe.compiled
        for module in compiled.modules():
            entry = compiled.entry(module)  # torch.compile(model): its wrapper
            module = module if entry is None else entry  # (no `or`: a module may define len)
            called.setdefault(id(module), module)
        if self._cut and optimizers:
            for module in _owners(optimizers):
                called.setdefault(id(module), module)
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
        if torch.compile is self._patched_compile:
            torch.compile = self._original_compile
        self._scaler_hooks.remove()
        self._pickling.remove()
        self._called = {}


def _owners(optimizers: list[Any]) -> list[torch.nn.Module]:
    """The live modules holding a parameter of ``optimizers``, their parents included (a scan
    of the live objects: once, in a run whose model-finding hook went at its first compile;
    ``first_step_done`` keeps the outermost)."""
    wanted = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    found = []
    for obj in gc.get_objects():
        # type(), not isinstance: isinstance would ask proxies for __class__
        if issubclass(type(obj), torch.nn.Module) and any(
            id(p) in wanted for p in obj.parameters()
        ):
            found.append(obj)
    return found
