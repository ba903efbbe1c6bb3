"""Messages of the training-bug checks (tuidebug/checks/): alerts, overfit and LR-finder results.

All are kept in the run's history (``retention = "all"``): a console that attaches late, and
``tuidebug check`` reading the history after the run, see every alert.
"""

from __future__ import annotations

from typing import ClassVar

from tuidebug.wire.messages import Message


class Alert(Message):
    """A rule fired: ``message`` names the place; ``why`` and ``fix`` explain it.

    ``severity``: "info", "warning" or "error". ``place`` is the module, parameter or loss the
    alert is about ("" for the run as a whole); ``layer`` is a module's qualified name when the
    alert concerns one (the console can jump to it on the layers screen). ``evidence`` holds the
    numbers the rule saw.
    """

    retention: ClassVar[str] = "all"

    rule: str
    severity: str
    message: str
    why: str
    fix: str
    place: str = ""
    layer: str = ""
    evidence: str = ""


class OverfitResult(Message):
    """``--overfit-batch``: how far the loss fell while the first batch was fed again and again."""

    retention: ClassVar[str] = "all"

    steps: int
    first_loss: float | None
    last_loss: float | None
    min_loss: float | None
    reached: bool
    batches_replayed: int = 0


class LrFindResult(Message):
    """A learning-rate range test: the rates tried, the (smoothed) losses, a suggested rate."""

    retention: ClassVar[str] = "all"

    lrs: list[float]
    losses: list[float]
    suggested: float | None
    restored: bool
    note: str = ""


class ChecksDone(Message):
    """The checks stopped the run at ``step`` (``tuidebug check --steps N``)."""

    retention: ClassVar[str] = "all"

    reason: str = ""
