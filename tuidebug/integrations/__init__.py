"""Training frameworks under ``tuidebug run``, with no change to the script.

A script that trains with Lightning's ``Trainer.fit`` or Hugging Face's ``Trainer.train``
never calls ``optimizer.step()`` itself, and the framework's idea of a step, a loss, its logged
metrics and a checkpoint are what a person wants to see. Each integration adds one callback
of the framework's own kind to every trainer the script builds, and that callback drives the
probe through the public hook object (``probe.attach(model, optimizer)`` then
``hook.step(loss=..., **scalars)``), exactly as a script written for tuidebug would.
Accelerate has no trainer: its loop is the script's, and the probe's own hooks find its
optimizer steps; ``Accelerator.backward`` is wrapped so that they see the script's loss and
its accumulated micro-batches as one step (``accelerate.py``).

How it gets there without a global patch that outlives the probe: :class:`Integrations` (an
observer of the live probe, installed with the probe's extensions, so only under
``tuidebug run`` with a console link) puts a finder on ``sys.meta_path`` that does nothing but
wait for the framework's trainer module to be imported *by the script*. When it is, its
``Trainer.__init__`` is wrapped so that each new trainer gets the callback (Accelerate's
``Accelerator.backward``, the same way). Nothing here imports a framework; a script that
never imports one never runs any of this. When the probe goes (``remove_hooks``, at the
script's end or when it disables itself), the finder is taken out, ``__init__``
(``backward``) is put back, and callbacks already held by live trainers turn into no-ops.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tuidebug.probe.observer import Observer
from tuidebug.probe.probe import _host_number  # the probe's reader: never a device sync
from tuidebug.wire.loop_messages import LoopEvent

if TYPE_CHECKING:
    from tuidebug.probe.extensions.checkpoints import CheckpointsObserver
    from tuidebug.probe.hook_api import Hook
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")

Patch = Callable[[ModuleType, "Integrations"], None]


def _lightning(module: ModuleType, owner: Integrations) -> None:
    from tuidebug.integrations import lightning

    lightning.patch(module, owner)


def _transformers(module: ModuleType, owner: Integrations) -> None:
    from tuidebug.integrations import hf

    hf.patch(module, owner)


def _accelerate(module: ModuleType, owner: Integrations) -> None:
    from tuidebug.integrations import accelerate

    accelerate.patch(module, owner)


# The module that defines each framework's Trainer (Accelerate's: its Accelerator), and what
# to do once it is imported.
TARGETS: dict[str, Patch] = {
    "lightning.pytorch.trainer.trainer": _lightning,
    "pytorch_lightning.trainer.trainer": _lightning,
    "transformers.trainer": _transformers,
    "accelerate.accelerator": _accelerate,
}


class _PatchingLoader(importlib.abc.Loader):
    """The real loader of a target module, then the patch (never an error for the import)."""

    def __init__(self, loader: importlib.abc.Loader, owner: Integrations, patch: Patch) -> None:
        self._loader = loader
        self._owner = owner
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._owner.apply(self._patch, module)

    def __getattr__(self, name: str) -> Any:
        # The module's __loader__ is this object: get_source, get_resource_reader... (inspect,
        # linecache, importlib.resources) must still reach the real loader's.
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Waits on ``sys.meta_path`` for the frameworks' trainer modules; finds nothing itself."""

    def __init__(self, owner: Integrations) -> None:
        self._owner = owner
        self._busy = threading.local()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = TARGETS.get(fullname)
        if patch is None or getattr(self._busy, "on", False) or self._owner.closed:
            return None
        self._busy.on = True  # the finders after us find the real spec; we must not recurse
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.on = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, self._owner, patch)
        return spec


class Integrations(Observer):
    """The frameworks' integrations of one probe: the import finder and what it patched."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.closed = False
        self._undo: list[Callable[[], None]] = []
        self._finder = _Finder(self)
        sys.meta_path.insert(0, self._finder)
        for name, patch in TARGETS.items():  # imported before the probe (rare): patch now
            module = sys.modules.get(name)
            if module is not None:
                self.apply(patch, module)

    @property
    def live(self) -> bool:
        """Whether callbacks should still drive the probe."""
        return not self.closed and not self.probe.disabled

    def apply(self, patch: Patch, module: ModuleType) -> None:
        """Run one framework's patch; a failure is logged once and the script goes on bare."""
        if self.closed:
            return
        try:
            patch(module, self)
        except Exception as error:  # a framework we do not understand trains without us
            log.warning("tuidebug: no integration for %s (%r)", module.__name__, error)

    def wrap_method(self, cls: type, name: str, make: Callable[[Any], Any]) -> None:
        """Replace ``cls``'s own method ``name`` by ``make(original)`` until close (then put
        back, if nobody replaced it again since); a method already ours is left alone."""
        original = cls.__dict__.get(name)
        if original is None or getattr(original, "__tuidebug_wrapped__", False):
            return
        wrapper = functools.wraps(original)(make(original))
        wrapper.__tuidebug_wrapped__ = True  # type: ignore[attr-defined]
        setattr(cls, name, wrapper)

        def undo() -> None:
            if cls.__dict__.get(name) is wrapper:
                setattr(cls, name, original)

        self._undo.append(undo)

    def wrap_init(self, cls: type, after: Callable[[Any], None]) -> None:
        """Wrap ``cls.__init__`` so that ``after(instance)`` runs once it returned; undone on
        close (if nobody wrapped it again since)."""
        owner = self

        def make(original: Callable[..., None]) -> Callable[..., None]:
            def __init__(instance: Any, *args: Any, **kwargs: Any) -> None:
                original(instance, *args, **kwargs)
                if owner.live:
                    try:
                        owner._end_discovery()
                        after(instance)
                    except Exception as error:  # the trainer works without our callback
                        log.warning(
                            "tuidebug: could not follow %s (%r)", type(instance).__name__, error
                        )

            return __init__

        self.wrap_method(cls, "__init__", make)

    def attach(self, *objects: Any) -> Hook:
        """``tuidebug.attach(*objects)`` for a trainer's model and optimizers: from now on only
        the callback's ``hook.step()`` marks a boundary."""
        return self.probe.attach(*objects)

    def _end_discovery(self) -> None:
        """A trainer was built: it will name its model through :meth:`attach`, so the auto
        hooks' model discovery (a global forward hook the probe drops when step 1 ends) stops
        here. Left on, it would report the submodule a ``training_step`` calls (the module
        itself is rarely called) as a second model, and a run resumed from a framework's
        checkpoint, whose first step is not 1, would keep it for good."""
        auto = getattr(self.probe, "_auto", None)
        if auto is not None:
            auto.first_step_done()

    def checkpoints(self) -> CheckpointsObserver | None:
        """The checkpoints extension of this probe, if it is installed."""
        from tuidebug.probe.extensions.checkpoints import CheckpointsObserver

        for observer in self.probe.observers:
            if isinstance(observer, CheckpointsObserver):
                return observer
        return None

    def loop_event(
        self,
        kind: str,
        step: int,
        epoch: int,
        framework: str,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Send a ``LoopEvent`` (an epoch's end, a validation) for the consoles' loss chart.

        ``metrics`` go along when they are host numbers (floats, CPU tensors); a value on a
        device is left out (it would cost a sync; it comes with the next step's scalars)."""
        if not self.live:
            return
        values: dict[str, float] = {}
        for key, value in (metrics or {}).items():
            number = _host_number(value)
            if isinstance(number, float):
                values[str(key)] = number
        self.probe.send(
            LoopEvent(
                rank=self.probe.rank,
                step=step,
                kind=kind,
                epoch=epoch,
                metrics=values,
                framework=framework,
            )
        )

    def close(self) -> None:
        self.closed = True
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()


def install(probe: Probe, options: dict[str, Any]) -> None:
    """Install the integrations as an observer of ``probe`` (removed with its hooks)."""
    probe.add_observer(Integrations(probe))
