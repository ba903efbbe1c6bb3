"""The error types of :mod:`tuidebug.ckpt`.

Every reader in this package raises only :class:`CheckpointError` subclasses, whatever the file
holds (truncated, random bytes, a malicious pickle). The console can then catch one type and show
its one-line message instead of a stack trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuidebug.ckpt.diff import StateDiff


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an error (an OSError's reason and file), for notices and results."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, OSError) and exc.strerror:
        first = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {first}"[:300]


class CheckpointError(Exception):
    """Base of every error this package raises on purpose; ``str(err)`` is one line."""


class UnreadableCheckpoint(CheckpointError):
    """The file is missing, empty, truncated, corrupt or not a checkpoint at all."""


class UnsafeCheckpoint(CheckpointError):
    """Reading the file would run code from it (full unpickling); refused without opt-in."""


class SaveError(CheckpointError):
    """A save did not complete; nothing was left under the final name."""


class DoesNotFit(CheckpointError):
    """The checkpoint does not match the live model/optimizer; nothing was changed.

    ``diff`` carries the missing/unexpected keys and the shape/dtype mismatches so that the
    console can show them rather than a stack trace.
    """

    def __init__(self, diff: StateDiff) -> None:
        self.diff = diff
        super().__init__(diff.summary())


class RestoreError(CheckpointError):
    """Applying a checkpoint failed after the fit check passed (the live state may be mixed)."""
