"""Messages of the checkpoint feature (probe -> consoles).

The probe saves, restores and diffs on the training thread (see
``tuidebug/probe/extensions/checkpoints.py``) and reports each outcome here; the console's
checkpoint browser folds them (``tuidebug/console/extensions/checkpoints.py``). Saves and
restores are kept in the run's history ("all") so a console attached later sees them; a diff
is an answer to one console's question and is passed on live only.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tuidebug.wire.messages import Message

MAX_DIFF_ROWS = 200
"""Rows of each list a diff message carries (sorted, most significant first)."""


class CheckpointConfig(Message):
    """Where this run saves checkpoints and how (sent when the probe starts, and again when a
    framework's trainer starts: ``framework`` then names it, and ``folder`` is where that
    framework writes its own checkpoints, which save now and restore go through)."""

    folder: str = ""
    save_every: int = 0
    keep: int = 0
    resume: str = ""
    framework: str = ""  # "", "lightning" or "transformers"


class CheckpointSaved(Message):
    """A save finished (``ok``) or failed (``error``, one line); ``step`` is the saved step."""

    ok: bool
    path: str
    reason: str = "manual"  # "manual" (the console), "every" (--save-every)
    error: str = ""
    size: int = 0
    sha256: str = ""
    seconds: float = 0.0
    loss: float | None = None
    removed: list[str] = msgspec.field(default_factory=list)


class CheckpointRestored(Message):
    """A restore (or ``--resume``) was applied or refused; ``step`` is the step the run is at now.

    ``from_step`` is the step the run was at before. A checkpoint that does not fit is refused
    with ``problems`` (the key/shape/dtype diff, one line each) and nothing is changed.
    ``discarded`` counts steps computed before the checkpoint could be applied (``--resume``
    in a script without the hook object: its first step, see docs/checkpoints.md).
    """

    ok: bool
    path: str
    from_step: int = 0
    kind: str = "restore"  # "restore" (the console) or "resume" (--resume)
    error: str = ""
    problems: list[str] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)
    restored: list[str] = msgspec.field(
        default_factory=list
    )  # what was loaded: "model", "optimizer", "scheduler", "rng"...
    discarded: int = 0


class CheckpointDiff(Message):
    """A checkpoint compared with the live model (``b`` = live), computed on the training thread.

    Lists are sorted (largest relative change first) and cut to ``MAX_DIFF_ROWS``; ``truncated``
    says how many rows were left out in all.
    """

    retention: ClassVar[str] = "none"

    path: str
    ok: bool = True
    error: str = ""
    missing: list[str] = msgspec.field(default_factory=list)
    unexpected: list[str] = msgspec.field(default_factory=list)
    mismatches: list[str] = msgspec.field(default_factory=list)  # "key: shape/dtype a vs b"
    changes: list[tuple[str, float, int]] = msgspec.field(
        default_factory=list
    )  # (key, ‖a−b‖/‖b‖, numel)
    notes: list[str] = msgspec.field(default_factory=list)
    compared: int = 0
    truncated: int = 0
