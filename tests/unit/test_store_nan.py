"""A NaN loss survives the history on disk (SQLite would store it as NULL, "no loss").

A diverged run's history must say nan: the ratchet, ``--compare``, ``tuidebug ls`` and a
console replaying the run read the losses from here. Real SQLite files, written and read the
way the supervisor and the readers do.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from tuidebug.checks.ratchet import read_points
from tuidebug.supervisor.store import HistoryStore
from tuidebug.wire.messages import StepPoint


def test_nan_inf_and_missing_losses_read_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    store = HistoryStore(path)
    losses = [0.5, math.inf, None, -math.inf, math.nan]
    store.add_points(0, [StepPoint(i + 1, float(i), loss) for i, loss in enumerate(losses)])
    store.close()

    back = [p.loss for p in read_points(path)]
    assert back[:4] == [0.5, math.inf, None, -math.inf]
    assert back[4] is not None and math.isnan(back[4])
    reader = HistoryStore(path, readonly=True)
    try:
        step, last = reader.tail()
    finally:
        reader.close()
    assert step == 5 and last is not None and math.isnan(last)  # ls shows the run diverged


def test_an_old_history_with_null_losses_still_reads(tmp_path: Path) -> None:
    """Histories written before NaN was kept hold NULL there: read as no loss, as before."""
    path = tmp_path / "history.sqlite"
    HistoryStore(path).close()  # the schema
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO steps VALUES (0, 1, 0.0, 1.5, NULL)")
        db.execute("INSERT INTO steps VALUES (0, 2, 0.0, ?, NULL)", (math.nan,))  # -> NULL
    assert [p.loss for p in read_points(path)] == [1.5, None]
