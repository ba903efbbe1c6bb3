"""The ratchet: ``tuidebug check train.py --baseline RUN`` compares this run's loss curve with a
stored run's, step by step, and fails when it is worse beyond a tolerance.

The guide's ratchet is "record a learning curve, make a small change, compare curves". One
batch's loss is noise, so both curves are smoothed first: at each step, the mean of the last
``WINDOW`` losses (the same ``TAIL`` the expectations use for "the loss at the end"). Only steps
both runs recorded are compared (aligned by step number, rank 0).

- The gap at a step is relative: ``(this - baseline) / |baseline|`` on the smoothed curves, so
  one tolerance fits a loss of 2.3 and one of 0.01.
- The check **fails** when the gap at the last common step exceeds ``tolerance`` (default
  ``DEFAULT_TOLERANCE`` = 0.10: 10 % worse at the end). A curve that wobbled above the
  baseline midway and ended as good does not fail: the ratchet asks "is the result worse?".
- **Where the curves diverge** is the first common step whose gap exceeds the tolerance, printed
  whether or not the run fails (a change that slows early training shows there).
- A NaN/inf loss in this run where the baseline's is finite counts as worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuidebug.checks.expect import TAIL, series

DEFAULT_TOLERANCE = 0.10
WINDOW = TAIL


class BaselineError(ValueError):
    """The baseline cannot be read; the message says why (one line)."""


@dataclass(frozen=True)
class RatchetVerdict:
    ok: bool
    reason: str  # one line
    baseline: str  # the baseline run's id
    common_steps: int
    end_step: int | None
    this_end: float | None
    baseline_end: float | None
    gap: float | None  # relative gap at the end step
    diverges_at: int | None  # first step where the gap exceeds the tolerance
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "baseline": self.baseline,
            "common_steps": self.common_steps,
            "end_step": self.end_step,
            "loss": self.this_end,
            "baseline_loss": self.baseline_end,
            "gap": self.gap,
            "diverges_at": self.diverges_at,
            "tolerance": self.tolerance,
        }


def baseline_history(ref: str, what: str = "baseline") -> tuple[str, Path]:
    """The run ``ref`` names (a run id, a unique id prefix, or a run folder): (id, history).
    ``what`` starts the error messages (the console's ``--compare`` reads runs here too)."""
    from tuidebug.paths import find_run, match_runs

    folder = Path(ref).expanduser()
    if folder.is_dir():
        history = folder / "history.sqlite"
        if not history.exists():
            raise BaselineError(f"{what} {ref}: no history.sqlite in that folder")
        return folder.name, history
    paths = find_run(ref)
    if paths is None:
        many = len(match_runs(ref)) > 1
        raise BaselineError(
            f"{what} {ref!r} {'matches several runs' if many else 'names no run'}; "
            "see `tuidebug ls`"
        )
    if not paths.history.exists():
        raise BaselineError(f"{what} {paths.run_id} has no history")
    return paths.run_id, paths.history


def read_points(history: Path, rank: int = 0, what: str = "baseline") -> list[Any]:
    """The step points of ``rank`` in a stored history; BaselineError (starting with
    ``what`` and the run's folder name) when the file cannot be read: a corrupt or truncated
    SQLite file, a frame that does not decode, a permission error."""
    import sqlite3

    import msgspec

    from tuidebug.supervisor.store import HistoryStore

    try:
        store = HistoryStore(history, readonly=True)
        try:
            return [p for batch in store.iter_steps() if batch.rank == rank for p in batch.points]
        finally:
            store.close()
    except (sqlite3.Error, msgspec.DecodeError, OSError) as error:
        raise BaselineError(
            f"{what} {history.parent.name}: its history cannot be read ({error}); see `tuidebug ls`"
        ) from None


def smoothed(values: list[tuple[int, float]], window: int = WINDOW) -> dict[int, float]:
    """step -> mean of the losses of the last ``window`` steps up to it (trailing)."""
    out: dict[int, float] = {}
    for i, (step, _) in enumerate(values):
        part = [v for _, v in values[max(0, i - window + 1) : i + 1]]
        out[step] = sum(part) / len(part)
    return out


def relative_gap(this: float, base: float) -> float:
    """How much worse ``this`` is than ``base`` (0.1 = 10 % higher loss); inf for a NaN run."""
    if not math.isfinite(this):
        return math.inf if math.isfinite(base) else 0.0
    if not math.isfinite(base):
        return -math.inf
    return (this - base) / max(abs(base), 1e-12)


def compare(
    points: list[Any], baseline_points: list[Any], baseline_id: str, tolerance: float
) -> RatchetVerdict:
    """Judge this run's loss curve (``points``) against the baseline's."""
    mine = smoothed(series(points, "loss"))
    theirs = smoothed(series(baseline_points, "loss"))
    common = sorted(set(mine) & set(theirs))

    def verdict(ok: bool, reason: str, **kw: Any) -> RatchetVerdict:
        fields: dict[str, Any] = {
            "end_step": None,
            "this_end": None,
            "baseline_end": None,
            "gap": None,
            "diverges_at": None,
        }
        fields.update(kw)
        return RatchetVerdict(ok, reason, baseline_id, len(common), tolerance=tolerance, **fields)

    if not theirs:
        return verdict(False, f"baseline {baseline_id} recorded no loss")
    if not common:
        return verdict(False, f"no step in common with baseline {baseline_id}")
    diverges = next((s for s in common if relative_gap(mine[s], theirs[s]) > tolerance), None)
    end = common[-1]
    gap = relative_gap(mine[end], theirs[end])
    where = f"; curves diverge from step {diverges}" if diverges is not None else ""
    shown = "inf" if math.isinf(gap) else f"{gap:+.1%}"
    text = (
        f"loss {mine[end]:.4g} vs baseline {baseline_id}'s {theirs[end]:.4g} at step {end} "
        f"({shown}, mean of the last {WINDOW} steps; tolerance {tolerance:.0%}){where}"
    )
    ok = gap <= tolerance
    return verdict(
        ok,
        ("ratchet ok: " if ok else "ratchet failed: ") + text,
        end_step=end,
        this_end=mine[end],
        baseline_end=theirs[end],
        gap=gap,
        diverges_at=diverges,
    )
