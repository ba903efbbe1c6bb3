"""Another run's loss curve, to overlay on the live loss chart (``tuidebug run --compare RUN``,
the dashboard's ``v`` key).

The curve is read once, with the ratchet's loader (``checks/ratchet.py``: the same run lookup
and stored points as ``tuidebug check --baseline``), into a :class:`MinMaxHistory` with the
live chart's bucket count and smoothing, so both lines are smoothed alike and the overlay costs
a draw what the live series costs. It is static: nothing about it changes while the run goes on.

Plain Python, no Textual: the console loads it in a worker thread (a long run's history takes
a while to read) and hands it to the chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuidebug.console.history import MinMaxHistory
from tuidebug.paths import RunPaths


class CompareError(ValueError):
    """The run to compare with cannot be shown; the message says why (one line)."""


@dataclass(frozen=True)
class CompareCurve:
    """Rank 0's loss of a stored run, aligned by step."""

    run_id: str
    script: str
    history: MinMaxHistory
    points: int  # how many losses were read

    @property
    def label(self) -> str:
        """What the chart's legend calls it: ``20261130-101500-ab12 train.py``."""
        return run_label(self.run_id, self.script)


def run_label(run_id: str, script: str) -> str:
    """The legend's name of a run (the live one is named the same way)."""
    return f"{run_id} {Path(script).name}".strip()


def load_compare(ref: str) -> CompareCurve:
    """The loss curve of the run ``ref`` names (an id, a unique prefix, or a run folder).

    Raises CompareError, with a message for the person who asked, for an unknown or ambiguous
    id, a run without a history or without a single loss, or a history that cannot be read.
    """
    from tuidebug.checks.expect import series
    from tuidebug.checks.ratchet import BaselineError, baseline_history, read_points

    try:
        run_id, history_file = baseline_history(ref, what="--compare")
        losses = series(read_points(history_file, what="--compare"), "loss")
    except BaselineError as error:
        raise CompareError(str(error)) from None
    if not losses:
        raise CompareError(f"--compare {run_id}: that run recorded no loss (no steps)")
    # The live chart's history (ranks_state's per-rank loss) is a default MinMaxHistory: the
    # same buckets and smoothing weight, so the two smoothed lines are comparable.
    curve = MinMaxHistory()
    for step, value in losses:
        curve.append(step, value)
    return CompareCurve(run_id, _script_of(history_file.parent), curve, len(losses))


def _script_of(folder: Path) -> str:
    """The script recorded in a run folder's meta.json ("" when it cannot be read)."""
    script = RunPaths(folder.name, folder, folder / "socket").read_meta().get("script")
    return script if isinstance(script, str) else ""
