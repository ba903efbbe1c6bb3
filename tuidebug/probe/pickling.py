"""The probe's module hooks stay out of the script's pickles and copies.

The probe keeps forward hooks on the root models for as long as it lives (the checks' forward
classification, the step-phase clock, the layer sampler). They are closures and bound methods
of probe objects, which hold sockets and locks: a script's ``torch.save(model, f)`` (pytorch/
examples' word_language_model does it) failed with "Can't pickle local object", and
``copy.deepcopy(model)`` (a best-model snapshot, an EMA copy) with "cannot pickle 'socket'
object". Even where they did pickle, the copy would carry the probe's hooks into a model the
probe does not know, and a checkpoint would name tuidebug's classes (a ``weights_only`` load
refuses them).

So, while the probe lives, ``nn.Module.__getstate__`` (which pickling and ``copy.deepcopy``
both call) is wrapped: the state it returns leaves out the hooks whose function comes from a
``tuidebug`` module, and their entries in the hook flag dicts (``with_kwargs``, ``always_call``).
The live module keeps its hooks; a module without ours pickles exactly as before. The cost is a
scan of a few small dicts per module pickled, nothing on the training path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

# Module attributes that map a hook handle's id to a hook function ...
_HOOK_FUNCTIONS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
# ... and those that map the same ids to a flag.
_HOOK_FLAGS = (
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _ours(hook: Any) -> bool:
    """Whether ``hook`` (a function, a bound method, a partial, a hook wrapper) is tuidebug's."""
    for candidate in (hook, getattr(hook, "func", None), getattr(hook, "hook", None)):
        module = getattr(candidate, "__module__", None)
        if isinstance(module, str) and (module == "tuidebug" or module.startswith("tuidebug.")):
            return True
    return False


def strip_probe_hooks(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a module's ``__dict__`` copy) without tuidebug's hooks; the same dict when
    it has none. The hook dicts are replaced by filtered copies, never edited in place."""
    ours: set[int] = set()
    for name in _HOOK_FUNCTIONS:
        hooks = state.get(name)
        if isinstance(hooks, dict):
            ours.update(key for key, hook in hooks.items() if _ours(hook))
    if not ours:
        return state
    for name in (*_HOOK_FUNCTIONS, *_HOOK_FLAGS):
        hooks = state.get(name)
        if isinstance(hooks, dict) and any(key in ours for key in hooks):
            state[name] = OrderedDict((k, v) for k, v in hooks.items() if k not in ours)
    return state


class HooklessPickling:
    """Wraps ``nn.Module.__getstate__`` until ``remove()`` (then puts it back, if still ours)."""

    def __init__(self) -> None:
        self._original = nn.Module.__getstate__
        original = self._original

        def __getstate__(module: nn.Module) -> Any:
            state = original(module)
            if isinstance(state, dict):
                try:
                    return strip_probe_hooks(state)
                except Exception:  # pickling the script's model must never fail because of us
                    return state
            return state

        self._patched = __getstate__
        nn.Module.__getstate__ = __getstate__  # type: ignore[method-assign]

    def remove(self) -> None:
        if nn.Module.__getstate__ is self._patched:
            nn.Module.__getstate__ = self._original  # type: ignore[method-assign]
