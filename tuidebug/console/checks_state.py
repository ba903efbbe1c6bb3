"""The console's state of the training-bug checks: alerts, overfit and LR-finder results.

Plain Python (no Textual): the RunModel folds messages into it; screens and widgets read it and
redraw when ``version`` moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tuidebug.wire.check_messages import Alert, LrFindResult, OverfitResult
from tuidebug.wire.messages import Message

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


class ChecksState:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.silenced: set[str] = set()
        self.overfit: OverfitResult | None = None
        self.lr_find: LrFindResult | None = None
        self.version = 0

    def fold(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if isinstance(message, Alert):
                self.alerts.append(message)
            elif isinstance(message, OverfitResult):
                self.overfit = message
            elif isinstance(message, LrFindResult):
                self.lr_find = message
            else:
                continue
            self.version += 1

    def silence(self, rule: str) -> None:
        """Hide a rule's alerts here (the probe is told separately)."""
        self.silenced.add(rule)
        self.version += 1

    def ranks(self) -> list[int]:
        """The ranks that sent alerts (a job's rules run on every rank)."""
        return sorted({a.rank for a in self.alerts})

    def visible(self, rank: int | None = None) -> list[Alert]:
        """Alerts not silenced (of one rank, or of every rank for None), the most severe
        first, then by step."""
        shown = [
            a
            for a in self.alerts
            if a.rule not in self.silenced and (rank is None or a.rank == rank)
        ]
        return sorted(shown, key=lambda a: (SEVERITY_ORDER.get(a.severity, 1), a.step))

    def counts(self) -> dict[str, int]:
        counts = {"error": 0, "warning": 0, "info": 0}
        for alert in self.alerts:
            if alert.rule not in self.silenced:
                counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return counts

    def summary(self) -> Any:
        return self.counts()
