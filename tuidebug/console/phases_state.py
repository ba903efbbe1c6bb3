"""The console's state of the step-time feature: where each rank's step time goes, and the
profiler captures.

Plain Python (no Textual, no torch): the RunModel folds ``StepPhases``, ``ProfileStarted`` and
``ProfileResult`` into it through the phases extension; the dashboard's step-time bar and the
profile screen read it and redraw when ``version`` moved. Each phase's history is a
``MinMaxHistory`` (the loss chart's), one point per batch (its mean milliseconds per step at
its last step), so a long run costs the same to draw as a short one and no slow stretch is
averaged away.
"""

from __future__ import annotations

from collections.abc import Iterable

from tuidebug.console.history import MinMaxHistory
from tuidebug.wire.messages import Message
from tuidebug.wire.phase_messages import PHASES, ProfileResult, ProfileStarted, StepPhases

RECENT_STEPS = 200  # the dashboard's figures: the mean over about this many recent steps


class RankPhases:
    """One rank's step time: recent means per phase, and each phase's history."""

    def __init__(self) -> None:
        self.history = {name: MinMaxHistory(capacity=512, smoothing=0.0) for name in PHASES}
        self.recent: list[StepPhases] = []
        self.steps = 0
        self.clock = "cpu"

    def add(self, batch: StepPhases) -> None:
        per_step = batch.per_step()
        for name, value in per_step.items():
            self.history[name].append(batch.step, value * 1e3)
        self.recent.append(batch)
        # Keep just enough batches for RECENT_STEPS steps (at least the newest).
        while len(self.recent) > 1 and sum(b.steps for b in self.recent[1:]) >= RECENT_STEPS:
            self.recent.pop(0)
        self.steps += batch.steps
        self.clock = batch.clock

    def means(self) -> dict[str, float]:
        """Milliseconds per step of each phase over the recent batches."""
        n = sum(b.steps for b in self.recent) or 1
        out = dict.fromkeys(PHASES, 0.0)
        for batch in self.recent:
            for name, value in batch.per_step().items():
                out[name] += value * batch.steps * 1e3 / n
        return out

    def span(self) -> tuple[int, int]:
        return (self.recent[0].first, self.recent[-1].step) if self.recent else (0, 0)


class PhasesState:
    """What the console knows of the run's step time and profiler captures."""

    def __init__(self) -> None:
        self.ranks: dict[int, RankPhases] = {}
        self.started: dict[int, ProfileStarted] = {}
        self.results: dict[int, ProfileResult] = {}
        self.version = 0

    def fold(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if isinstance(message, StepPhases):
                rank = self.ranks.get(message.rank)
                if rank is None:
                    rank = self.ranks[message.rank] = RankPhases()
                rank.add(message)
            elif isinstance(message, ProfileStarted):
                self.started[message.rank] = message
            elif isinstance(message, ProfileResult):
                self.results[message.rank] = message
            else:
                continue
            self.version += 1

    def shown_rank(self) -> RankPhases | None:
        """The rank the dashboard shows: the lowest that has reported."""
        return self.ranks[min(self.ranks)] if self.ranks else None

    def capturing(self) -> list[int]:
        """Ranks whose latest capture started and has not reported yet."""
        return [
            rank
            for rank, started in self.started.items()
            if rank not in self.results or self.results[rank].step <= started.step
        ]

    def latest_result(self) -> ProfileResult | None:
        """The finished capture of the lowest rank (or None)."""
        return self.results[min(self.results)] if self.results else None
