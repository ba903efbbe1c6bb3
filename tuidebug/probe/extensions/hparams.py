"""Live hyperparameters: set an optimizer's ``lr``, ``weight_decay``, ``momentum`` or ``betas``,
or a value the script declared with ``dbg.tunable(name, default)``, from the console.

Commands (``wire/hparam_messages.py``), applied by the gate at the next step boundary on the
training thread, so the step after it is the first to use the new value:

* ``set-hparam`` {name, value, group ("" for every group), optimizer ("" for every one, else the
  name a checkpoint uses: "optimizer", "optimizer2"...)};
* ``set-tunable`` {name, value};
* ``hparams-scan``: look for LR schedulers now (the console's screen opened) and send the table.

Each is answered with a :class:`HparamChanged` (kept in the run's history, marked on the loss
chart) or a ``Notice`` saying why it was refused; :class:`Hparams`, the table a console shows,
is sent when it changed (checked at most once a second: a scheduler moves the lr each step).

LR schedulers (checked against torch 2.13's sources). Most of torch's schedulers compute the
next lr from ``group["lr"]`` (StepLR, ExponentialLR, LinearLR...) or from ``base_lrs`` times a
factor (LambdaLR, CosineAnnealingWarmRestarts, the closed forms): scaling ``base_lrs`` (and the
group's ``initial_lr``) by new/old keeps the schedule's shape from the new value on, so that is
what is done, and the event says so ("StepLR base lrs scaled x0.1"). CyclicLR also scales its
``max_lrs``; OneCycleLR reads ``initial_lr``, ``max_lr`` and ``min_lr`` from the group (all
scaled). ReduceLROnPlateau only ever lowers ``group["lr"]`` on a plateau: it keeps the new value.
A scheduler class torch does not ship may compute anything: its base lrs are scaled too, with a
warning that its next ``step()`` may overwrite the value. OneCycleLR and CyclicLR with
``cycle_momentum`` overwrite momentum and betas every step: a change to those warns so.

Checkpoints (``extensions/checkpoints.py``): a save records the changes made so far and the
tunables' values in its metadata (``hparams``); a restore gives the optimizer's param groups
back through torch's own ``load_state_dict`` (it copies every saved group value but
``params``) and the schedulers' ``base_lrs`` through theirs; this extension puts the tunables
back and says what went back ("restored: lr back to 0.01").

Cost per step: ``on_boundary`` is three compares; ``dbg.tunable`` is one dict read.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tuidebug.probe import hook_api
from tuidebug.probe.extensions.checkpoints import CheckpointsObserver, _names
from tuidebug.probe.observer import Observer
from tuidebug.probe.schedulers import find_schedulers
from tuidebug.wire.hparam_messages import (
    HPARAM_NAMES,
    HPARAMS_SCAN,
    SET_HPARAM,
    SET_TUNABLE,
    HparamChanged,
    HparamGroup,
    Hparams,
    OptimizerHparams,
    TunableInfo,
)
from tuidebug.wire.messages import Command, Notice, StepPoint

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe

log = logging.getLogger("tuidebug.probe")

T = TypeVar("T")
REFRESH = 1.0  # seconds between checks of the table (a scheduler changes lr every step)
MAX_CHANGES = 1000  # changes kept for the checkpoint metadata (the history keeps them all)

# torch's schedulers whose next lr follows from base_lrs or group["lr"] (see the docstring).
_SCALED = {
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "SequentialLR",
    "ChainedScheduler",
}


class Refused(Exception):
    """A command that cannot be applied; the message says why, for the console."""


def fmt(value: Any) -> str:
    """A value as the console shows it and reads it back: ``repr`` of floats (exact), pairs
    as ``0.9,0.999``."""
    if isinstance(value, (list, tuple)):
        return ",".join(fmt(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _short(value: Any) -> str:
    """For people: ``0.0003``, ``1e-05``, ``(0.9, 0.999)``."""
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    return "other"


def parse_tunable(text: str, default: Any) -> Any:
    """``text`` as a value of ``default``'s type; raises Refused."""
    kind = _kind(default)
    if kind == "bool":
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise Refused(f"{text!r} is not a bool (true/false, 1/0, on/off)")
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise Refused(f"{text!r} is not an int") from None
    if kind == "float":
        number = _float(text)
        if not math.isfinite(number):
            raise Refused(f"{text!r} is not finite")
        return number
    if kind == "str":
        return text
    raise Refused(f"a {type(default).__name__} cannot be set from the console")


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise Refused(f"{text!r} is not a number") from None


def parse_hparam(name: str, text: str) -> float | tuple[float, float]:
    """A value for param-group key ``name``, validated as torch's optimizers would; raises
    Refused with the reason."""
    if name not in HPARAM_NAMES:
        raise Refused(f"{name!r} is not one of {', '.join(HPARAM_NAMES)}")
    if name == "betas":
        parts = [p for p in text.replace("(", " ").replace(")", " ").replace(",", " ").split()]
        if len(parts) != 2:
            raise Refused(f"betas is a pair (b1,b2), not {text!r}")
        b1, b2 = (_float(p) for p in parts)
        for b in (b1, b2):
            if not (math.isfinite(b) and 0.0 <= b < 1.0):
                raise Refused(f"each beta must be in [0, 1), not {fmt(b)}")
        return (b1, b2)
    value = _float(text)
    if not math.isfinite(value):
        raise Refused(f"{name} must be finite, not {text.strip()}")
    if value < 0:
        raise Refused(f"{name} must be >= 0, not {fmt(value)}")
    if name == "momentum" and value >= 1.0:
        raise Refused(f"momentum must be in [0, 1), not {fmt(value)}")
    return value


def _number(value: Any, sync: bool) -> float | None:
    """A group value as a float; a tensor on a device only when ``sync`` (a person asked)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    device = getattr(value, "device", None)
    if device is None or getattr(value, "numel", lambda: 0)() != 1:
        return None
    if device.type != "cpu" and not sync:
        return None
    return float(value)


def _read(group: Mapping[str, Any], key: str, sync: bool) -> float | tuple[float, ...] | None:
    value = group.get(key)
    if key == "betas" and isinstance(value, (list, tuple)):
        numbers = [_number(v, sync) for v in value]
        return None if None in numbers else tuple(n for n in numbers if n is not None)
    return _number(value, sync)


def _write(group: dict[str, Any], key: str, value: float | tuple[float, float]) -> None:
    """Set a group value in place of the old one: a tensor stays the same tensor (fused and
    capturable optimizers keep pointers to it), a float is replaced."""
    old = group[key]
    if isinstance(value, tuple):
        if all(hasattr(v, "fill_") for v in old):
            for tensor, v in zip(old, value, strict=True):
                tensor.fill_(v)
        else:
            group[key] = type(old)(value) if isinstance(old, (list, tuple)) else value
    elif hasattr(old, "fill_"):
        old.fill_(value)
    else:
        group[key] = value


def _scale_key(values: Any, key: Any, ratio: float | None, new: float) -> None:
    """``values[key] *= ratio``, or ``= new`` when there is no ratio (the old lr was 0); a
    tensor is filled in place (it stays the object the optimizer or scheduler holds)."""
    old = values[key]
    target = new if ratio is None else float(old) * ratio
    if hasattr(old, "fill_"):
        old.fill_(target)
    else:
        values[key] = target


def _scale_list(values: Any, index: int, ratio: float | None, new: float) -> None:
    if isinstance(values, list) and index < len(values):
        _scale_key(values, index, ratio, new)


class TunableValues:
    """The script's live-tunable values (``hook_api.TunableTable``): read on the training
    thread by ``dbg.tunable``, written there by the gate's ``set-tunable``."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.defaults: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}
        """Values restored (``--resume``) before the script declared them."""
        self.dirty = False

    def value(self, name: str, default: T) -> T:
        try:
            return self.values[name]
        except KeyError:
            return self._declare(name, default)
        except Exception:  # an unhashable name: never raise into the script
            return default

    def _declare(self, name: str, default: T) -> T:
        if not isinstance(name, str):
            return default
        value = self.pending.pop(name, default)
        if _kind(value) != _kind(default):
            value = default  # a checkpoint of another version of the script
        self.values[name] = value
        self.defaults[name] = default
        self.dirty = True
        return value

    def infos(self) -> list[TunableInfo]:
        return [
            TunableInfo(
                name=name,
                value=fmt(value),
                default=fmt(self.defaults[name]),
                kind=_kind(self.defaults[name]),
            )
            for name, value in self.values.items()
        ]


class HparamsObserver(Observer):
    """Applies the console's changes, keeps the table current, rides along in checkpoints."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.tunables = TunableValues()
        self.changes: list[dict[str, Any]] = []
        """Every change so far on this branch of the run (a restore puts the saved list back)."""
        self._schedulers: list[weakref.ref[Any]] = []
        self._scanned = False
        self._dirty = True
        self._next = 0.0
        self._table: Hparams | None = None
        self._before: dict[str, Any] = {}
        # Installed for the life of the process, even after the probe stops (it removes its
        # observers then): a value set from the console must not fall back to its default
        # behind the script's back.
        hook_api.install_tunables(self.tunables)

    # --- observer hooks (per step: three compares) --------------------------------------------

    def on_optimizer(self, optimizer: Any) -> None:
        self._dirty = True
        self._scanned = False

    def on_boundary(self, step: int, point: StepPoint, now: float) -> str | None:
        if self._dirty or self.tunables.dirty or now >= self._next:
            self._next = now + REFRESH
            self.send_table()
        return None

    # --- the table ----------------------------------------------------------------------------

    def optimizers(self) -> dict[str, Any]:
        """The optimizers by the names a checkpoint gives them."""
        return _names("optimizer", self.probe.optimizers())

    def schedulers(self, rescan: bool = False) -> list[Any]:
        """The LR schedulers of our optimizers: those of the last heap scan, or a new one.

        A scan takes a moment (300 ms for 300k objects on our 2-core VMs): it is made only when
        someone asks, at a change, a restore, or a console's ``hparams-scan`` (its screen
        opening), never on its own."""
        if rescan:
            self._scanned = True
            self._schedulers = [weakref.ref(s) for s in find_schedulers(self.probe.optimizers())]
        return [s for s in (ref() for ref in self._schedulers) if s is not None]

    def scan(self, _args: Mapping[str, str]) -> None:
        """A console opened its screen: look for schedulers, send the table."""
        self.schedulers(rescan=True)
        self.send_table(sync=True)

    def table(self, sync: bool = False) -> Hparams:
        schedulers = self.schedulers()
        optimizers = []
        for name, optimizer in self.optimizers().items():
            groups = []
            for index, group in enumerate(getattr(optimizer, "param_groups", [])):
                betas = _read(group, "betas", sync)
                groups.append(
                    HparamGroup(
                        index=index,
                        lr=_number(group.get("lr"), sync),
                        weight_decay=_number(group.get("weight_decay"), sync),
                        momentum=_number(group.get("momentum"), sync),
                        betas=list(betas) if isinstance(betas, tuple) else None,
                    )
                )
            optimizers.append(
                OptimizerHparams(
                    name=name,
                    class_name=type(optimizer).__name__,
                    groups=groups,
                    schedulers=[
                        type(s).__name__
                        for s in schedulers
                        if getattr(s, "optimizer", None) is optimizer
                    ],
                )
            )
        return Hparams(
            rank=self.probe.rank,
            step=self.probe.step,
            optimizers=optimizers,
            tunables=self.tunables.infos(),
            schedulers_known=self._scanned,
        )

    def send_table(self, sync: bool = False) -> None:
        self._dirty = False
        self.tunables.dirty = False
        table = self.table(sync)
        last = self._table
        if last is not None and (last.optimizers, last.tunables, last.schedulers_known) == (
            table.optimizers,
            table.tunables,
            table.schedulers_known,
        ):
            return
        self._table = table
        self.probe.send(table)

    # --- actions (training thread, at a boundary) ---------------------------------------------

    def set_hparam(self, args: Mapping[str, str]) -> None:
        name = args.get("name", "").strip()
        text = args.get("value", "")
        try:
            value = parse_hparam(name, text)
            targets = self._targets(args.get("optimizer", "").strip())
            group_arg = args.get("group", "").strip()
            index = None if group_arg in ("", "all", "*") else _index(group_arg)
            plans = [(oname, opt, self._groups(opt, oname, name, index)) for oname, opt in targets]
            if not any(groups for _, _, groups in plans):
                raise Refused(self._missing(name, targets))
        except Refused as error:
            self._refuse(f"set {name or '?'} = {text.strip()!r} refused: {error}")
            return
        schedulers = self.schedulers(rescan=True)
        for oname, optimizer, groups in plans:
            if groups:
                self._apply(oname, optimizer, groups, name, value, schedulers)
        self.send_table(sync=True)

    def set_tunable(self, args: Mapping[str, str]) -> None:
        name = args.get("name", "").strip()
        text = args.get("value", "")
        table = self.tunables
        try:
            if name not in table.values:
                known = ", ".join(table.values) or "none declared yet"
                raise Refused(f"the script declared no tunable {name!r} ({known})")
            old = table.values[name]
            new = parse_tunable(text, table.defaults[name])
        except Refused as error:
            self._refuse(f"set {name or '?'} = {text.strip()!r} refused: {error}")
            return
        if new == old and type(new) is type(old):
            self._notice("info", f"{name} is already {_short(new)}")
            return
        table.values[name] = new
        step = self.probe.step
        event = HparamChanged(
            rank=self.probe.rank,
            step=step,
            name=name,
            kind="tunable",
            old=[fmt(old)],
            new=fmt(new),
            text=f"{name} {_short(old)} -> {_short(new)} at step {step:,}",
        )
        self._record(event)
        self.send_table()

    # --- checkpoints (CheckpointExtra) --------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {
            "hparams": {
                "changes": list(self.changes),
                "tunables": dict(self.tunables.values),
            }
        }

    def before_restore(self) -> None:
        self._before = self._snapshot()

    def after_restore(self, metadata: Mapping[str, Any]) -> None:
        saved = metadata.get("hparams")
        table = self.tunables
        if isinstance(saved, Mapping):
            changes = saved.get("changes")
            self.changes = (
                [dict(c) for c in changes if isinstance(c, Mapping)]
                if isinstance(changes, list)
                else []
            )
            values = saved.get("tunables")
            values = values if isinstance(values, Mapping) else {}
            for name, default in table.defaults.items():
                # Not in the checkpoint: not declared yet when it was saved, so its default.
                value = values.get(name, default)
                table.values[name] = value if _kind(value) == _kind(default) else default
            table.pending = {str(k): v for k, v in values.items() if k not in table.defaults}
        after = self._snapshot()
        back = [
            f"{key} back to {_short(value)}"
            for key, value in after.items()
            if key in self._before and self._before[key] != value
        ]
        self._before = {}
        if back:
            text = "restored: " + ", ".join(back)
            self.probe.send(
                HparamChanged(
                    rank=self.probe.rank,
                    step=self.probe.step,
                    name=", ".join(item.split(" back to ")[0] for item in back),
                    kind="restore",
                    text=text,
                )
            )
            self._notice("info", text)
        self.schedulers(rescan=True)
        self.send_table(sync=True)

    # --- internals ----------------------------------------------------------------------------

    def _targets(self, wanted: str) -> list[tuple[str, Any]]:
        optimizers = self.optimizers()
        if not optimizers:
            raise Refused("no optimizer seen yet")
        if not wanted or wanted in ("all", "*"):
            return list(optimizers.items())
        if wanted not in optimizers:
            raise Refused(f"no optimizer {wanted!r} (known: {', '.join(optimizers)})")
        return [(wanted, optimizers[wanted])]

    @staticmethod
    def _groups(optimizer: Any, oname: str, name: str, index: int | None) -> list[int]:
        groups = optimizer.param_groups
        if index is not None:
            if not 0 <= index < len(groups):
                raise Refused(f"{oname} has {len(groups)} param group(s); no group {index}")
            if name not in groups[index]:
                raise Refused(f"group {index} of {type(optimizer).__name__} has no {name}")
            return [index]
        return [i for i, g in enumerate(groups) if name in g]

    @staticmethod
    def _missing(name: str, targets: Sequence[tuple[str, Any]]) -> str:
        classes = ", ".join(sorted({type(o).__name__ for _, o in targets}))
        hint = " (it has betas)" if name == "momentum" else ""
        hint = " (it has momentum)" if name == "betas" else hint
        return f"{classes} has no {name}{hint}"

    def _apply(
        self,
        oname: str,
        optimizer: Any,
        groups: list[int],
        name: str,
        value: float | tuple[float, float],
        schedulers: list[Any],
    ) -> None:
        param_groups = optimizer.param_groups
        old = [_read(param_groups[i], name, sync=True) for i in groups]
        if all(o == value for o in old):
            self._notice("info", f"{name} of {oname} is already {_short(value)}")
            return
        for i in groups:
            _write(param_groups[i], name, value)
        ours = [s for s in schedulers if getattr(s, "optimizer", None) is optimizer]
        note = _schedulers_after(name, ours, param_groups, groups, old, value)
        step = self.probe.step
        olds = {_short(o) for o in old}
        where = (
            ""
            if len(param_groups) == 1
            else (f", group {groups[0]}" if len(groups) == 1 else f", {len(groups)} groups")
        )
        was = olds.pop() if len(olds) == 1 else "/".join(_short(o) for o in old)
        text = f"{name} {was} -> {_short(value)} ({oname}{where}) at step {step:,}"
        if note:
            text += f"; {note}"
        self._record(
            HparamChanged(
                rank=self.probe.rank,
                step=step,
                name=name,
                optimizer=oname,
                groups=groups,
                old=[fmt(o) for o in old],
                new=fmt(value),
                scheduler=note,
                text=text,
            )
        )

    def _record(self, event: HparamChanged) -> None:
        self.probe.send(event)
        self.changes.append(
            {
                "step": event.step,
                "time": time.time(),
                "name": event.name,
                "kind": event.kind,
                "optimizer": event.optimizer,
                "groups": list(event.groups),
                "old": list(event.old),
                "new": event.new,
                "scheduler": event.scheduler,
            }
        )
        del self.changes[:-MAX_CHANGES]
        level = "warning" if "overwrite" in event.scheduler else "info"
        self._notice(level, event.text)

    def _snapshot(self) -> dict[str, Any]:
        """What a restore may put back, keyed for "lr back to 0.01" (group values per
        optimizer; the tunables)."""
        found: dict[str, Any] = {}
        optimizers = self.optimizers()
        for oname, optimizer in optimizers.items():
            groups = getattr(optimizer, "param_groups", [])
            for key in HPARAM_NAMES:
                values = [_read(g, key, sync=True) for g in groups if key in g]
                if not values:
                    continue
                label = key if len(optimizers) == 1 else f"{oname} {key}"
                found[label] = values[0] if len(set(values)) == 1 else tuple(values)
        for name, value in self.tunables.values.items():
            found[name] = value
        return found

    def _refuse(self, text: str) -> None:
        self._notice("error", text)

    def _notice(self, level: str, text: str) -> None:
        self.probe.send(Notice(rank=self.probe.rank, step=self.probe.step, level=level, text=text))


def _index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Refused(f"group {text!r} is not a group number") from None


def _schedulers_after(
    name: str,
    schedulers: list[Any],
    param_groups: list[dict[str, Any]],
    groups: list[int],
    old: list[Any],
    value: float | tuple[float, float],
) -> str:
    """Bring the optimizer's schedulers in line with a change; what was done, in a few words."""
    if not schedulers:
        return ""
    if name in ("momentum", "betas"):
        cycling = [type(s).__name__ for s in schedulers if getattr(s, "cycle_momentum", False)]
        if cycling:
            return f"warning: {', '.join(cycling)} cycles {name}: its next step() will overwrite it"
        return ""
    if name != "lr":
        return ""
    assert isinstance(value, float)
    # An lr of 0 cannot be scaled: the schedule's lrs are set to the new value instead.
    ratios = [value / o if isinstance(o, float) and o > 0 else None for o in old]
    for i, ratio in zip(groups, ratios, strict=True):
        group = param_groups[i]
        for key in ("initial_lr", "max_lr", "min_lr"):  # read by LRScheduler and OneCycleLR
            if key in group and (ratio is not None or key == "initial_lr"):
                _scale_key(group, key, ratio, value)
    notes = []
    plateau: Any = _plateau_type()
    for scheduler in schedulers:
        cls = type(scheduler).__name__
        last = getattr(scheduler, "_last_lr", None)
        for i in groups:  # get_last_lr() says what the optimizer now uses
            if isinstance(last, list) and i < len(last):
                last[i] = value
        if plateau is not None and isinstance(scheduler, plateau):
            notes.append(f"{cls} keeps it (lowers it from there on a plateau)")
            continue
        for i, ratio in zip(groups, ratios, strict=True):
            _scale_list(getattr(scheduler, "base_lrs", None), i, ratio, value)
            if cls == "CyclicLR":
                _scale_list(getattr(scheduler, "max_lrs", None), i, ratio, value)
        shown = {f"x{r:.3g}" if r is not None else f"set to {value:g}" for r in ratios}
        how = shown.pop() if len(shown) == 1 else "per group"
        if cls in _SCALED and type(scheduler).__module__.startswith("torch."):
            notes.append(f"{cls} base lrs scaled {how}")
        else:
            notes.append(
                f"warning: {cls} is not one of torch's schedulers: its next step() may "
                f"overwrite lr (its base lrs were scaled {how})"
            )
    return "; ".join(notes)


def _plateau_type() -> type | None:
    import torch

    found = getattr(torch.optim.lr_scheduler, "ReduceLROnPlateau", None)
    return found if isinstance(found, type) else None


def install(probe: Probe, options: dict[str, Any]) -> None:
    observer = HparamsObserver(probe)
    probe.add_observer(observer)
    for other in probe.observers:
        if isinstance(other, CheckpointsObserver):
            other.extras.append(observer)

    def on(method: Callable[[Mapping[str, str]], None]) -> Callable[[Command], None]:
        def action(command: Command) -> None:
            try:
                method(command.args)
            except Exception as error:  # a failed change is a notice, never the run's end
                log.exception("tuidebug: %s failed", command.name)
                observer._notice("error", f"{command.name} failed: {error!r}")

        return action

    probe.gate.add_action(SET_HPARAM, on(observer.set_hparam))
    probe.gate.add_action(SET_TUNABLE, on(observer.set_tunable))
    probe.gate.add_action(HPARAMS_SCAN, on(observer.scan))
