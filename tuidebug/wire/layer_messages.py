"""Messages of the layer inspector: the module tree once, then compact per-step statistics.

Module names are long and many (a transformer has thousands of modules), so they travel once per
model in a :class:`LayerTable`; every later message refers to a module by its *index* in the
sampler's numbering (``LayerTable.base + position``) and to a parameter tensor by its index
(``LayerTable.param_base + position``). Statistics are flat lists of floats (``ACT_FIELDS``
floats per module), which msgspec encodes in a few microseconds even for 1,000 modules.

These are subclasses of :class:`tuidebug.wire.messages.Message` (tagged by class name, with
``rank`` and ``step``); ``tuidebug/wire/registry.py`` lists this module for the codec.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from tuidebug.wire.messages import Message

__all__ = [
    "ACT_FIELDS",
    "AnyLayerMessage",
    "Histogram",
    "LayerStats",
    "LayerTable",
    "NonFinite",
]

ACT_FIELDS = ("mean", "std", "min", "max", "zeros", "nonfinite", "nan")
"""Per module, in ``LayerStats.act``: mean, std, min, max of the (primary) output; the fraction
of exact zeros; how many values are NaN or ±inf; how many are NaN. Values are counted on
forensic samples only (after a first non-finite value), to keep ordinary samples cheap: there,
``nonfinite`` is 0 or -1 ("some": a NaN or inf showed in the sum, norm, min or max) and ``nan``
is -1."""

HistogramKind = Literal["act", "grad", "weight"]


class Histogram(msgspec.Struct, array_like=True):
    """Counts of a tensor's finite values in ``len(counts)`` equal bins over [lo, hi].

    ``nonfinite`` values are not in any bin. ``param`` is the parameter tensor's index for
    "grad" and "weight" (-1 for "act").
    """

    layer: int
    kind: HistogramKind
    param: int
    lo: float
    hi: float
    counts: list[int]
    nonfinite: int = 0


class LayerTable(Message):
    """The module tree of one model, sent once when the sampler starts following it.

    Modules are in ``named_modules()`` order (pre-order: a parent before its children), so
    ``depths`` is enough to indent a tree. ``params`` counts every parameter under the module
    (its children's included); parameter tensors belong to the module that owns them directly.
    """

    model: str
    base: int
    names: list[str]
    types: list[str]
    depths: list[int]
    params: list[int]
    param_base: int = 0
    param_names: list[str] = msgspec.field(default_factory=list)
    param_layers: list[int] = msgspec.field(default_factory=list)
    param_shapes: list[str] = msgspec.field(default_factory=list)


class LayerStats(Message):
    """Statistics of one sampled step (``step``), for the modules that ran during it.

    Only the newest per rank is kept for consoles that attach later (``retention``).

    Activation statistics (``layers``, ``calls``, ``act``, shapes, dtypes, devices) are aligned
    with ``layers``, in the order the modules first finished their forward. ``calls`` counts
    forward calls in the step (a module reused N times aggregates its N outputs). Parameter
    statistics are aligned with ``params``; a ``grad_norm`` of -1 means the parameter had no
    gradient (NaN is a real NaN norm).
    """

    retention: ClassVar[str] = "latest"
    bulk: ClassVar[bool] = True  # one a step under dense sampling: batched, no wake-up each

    layers: list[int]
    calls: list[int]
    act: list[float]
    out_shapes: list[str]
    in_shapes: list[str]
    dtypes: list[str]
    devices: list[str]
    params: list[int] = msgspec.field(default_factory=list)
    grad_norm: list[float] = msgspec.field(default_factory=list)
    weight_norm: list[float] = msgspec.field(default_factory=list)
    update_ratio: list[float] = msgspec.field(default_factory=list)
    """‖Δw‖/‖w‖ over the step. Here and in ``weight_norm``, -1 means "not measured on this
    sample": dense sampling measures weights on one sample in a few (the ratio needs a copy
    of every weight)."""
    histograms: list[Histogram] = msgspec.field(default_factory=list)
    cost: float = 0.0
    """Seconds of the training thread this sample cost (hooks, statistics, the copy)."""
    interval: int = 0
    """Steps between samples, as chosen by the budget (or forced)."""
    forensic: bool = False
    """Sampled with NaN/Inf forensics (after a first non-finite value)."""


NonFiniteSource = Literal["loss", "forward", "backward", "input", "parameters", "unknown"]


class NonFinite(Message):
    """A non-finite value was seen (``located`` False) or traced to a module (``located`` True).

    ``step`` is the step where it was first seen; ``found_step`` the step whose sample named
    the module (the same step when that step was sampled, a later forensic step otherwise).
    ``layer`` is the module index, -1 when no module is named.
    """

    source: NonFiniteSource
    layer: int = -1
    name: str = ""
    detail: str = ""
    located: bool = False
    found_step: int = 0
    paused: bool = False


AnyLayerMessage = LayerTable | LayerStats | NonFinite
