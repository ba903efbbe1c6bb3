"""Messages of the live-hyperparameters feature (probe -> consoles).

A console asks with ``Command("set-hparam", {"name", "value", "group", "optimizer"})`` or
``Command("set-tunable", {"name", "value"})``; the probe applies it at the next step boundary on
the training thread (``tuidebug/probe/extensions/hparams.py``) and answers with a
:class:`HparamChanged` (kept in the run's history: the changes are the run's story) or a
``Notice`` saying why it refused. :class:`Hparams` is the table the console's screen shows: only
the newest is kept for consoles that attach later.

Values travel as text, formatted by the probe (``repr`` of a float reads back exactly), so one
field holds a learning rate, a pair of betas or a script's own tunable of any simple type.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tuidebug.wire.messages import Message

SET_HPARAM = "set-hparam"
SET_TUNABLE = "set-tunable"
HPARAMS_SCAN = "hparams-scan"
"""A console's screen opened: the probe looks for LR schedulers (a heap scan, only when asked)
and sends the table."""
HPARAM_NAMES = ("lr", "weight_decay", "momentum", "betas")
"""The optimizer param-group values a console may set."""


class HparamChanged(Message):
    """A value changed at the boundary of ``step`` (in effect from step ``step + 1``).

    ``kind``: "set" (an optimizer's param groups, from a console), "tunable" (a value the
    script declared with ``dbg.tunable``), "restore" (a checkpoint restore put values back;
    ``text`` says which). ``scheduler`` says what was done about LR schedulers attached to the
    optimizer ("StepLR base lrs scaled x0.33", or a warning that one will overwrite the value).
    """

    name: str
    kind: str = "set"
    optimizer: str = ""
    groups: list[int] = msgspec.field(default_factory=list)
    old: list[str] = msgspec.field(default_factory=list)
    """The value before, per group in ``groups`` (one entry for a tunable)."""
    new: str = ""
    scheduler: str = ""
    text: str = ""
    """One line for people: "lr 0.01 -> 0.001 (optimizer, all groups) at step 5"."""


class HparamGroup(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One param group of one optimizer: the values a console may set (None: not in it)."""

    index: int
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    betas: list[float] | None = None


class OptimizerHparams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An optimizer the probe follows, by the name save and restore use ("optimizer2")."""

    name: str
    class_name: str
    groups: list[HparamGroup] = msgspec.field(default_factory=list)
    schedulers: list[str] = msgspec.field(default_factory=list)
    """Class names of the LR schedulers attached to it."""


class TunableInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A value the script declared with ``dbg.tunable(name, default)``."""

    name: str
    value: str
    default: str
    kind: str  # "float", "int", "bool", "str", or "other" (listed, not settable)


class Hparams(Message):
    """The table of settable values, sent when it changed (at most about once a second while
    only a scheduler moves the learning rate, at once after a change or a restore)."""

    retention: ClassVar[str] = "latest"

    optimizers: list[OptimizerHparams] = msgspec.field(default_factory=list)
    tunables: list[TunableInfo] = msgspec.field(default_factory=list)
    schedulers_known: bool = False
    """False until the probe looked for schedulers (``HPARAMS_SCAN``, a change, a restore)."""
