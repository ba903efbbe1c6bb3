"""The script's terminal output, as lines a panel can show.

The script runs on a pty, so what arrives is what a terminal would get: UTF-8 split at any
byte, carriage returns that redraw a progress bar in place, colour codes (SGR), and other
control sequences (erase line, cursor moves) that only make sense to a real terminal.

``TerminalText`` keeps colour codes in the lines (Rich's ``Text.from_ansi`` renders them), makes
a carriage return replace the line being written, and drops every other control sequence. It is
plain Python (no Textual, no Rich), so it is cheap to test and to feed at any rate.
"""

from __future__ import annotations

import codecs
import re
from collections import deque

from tuidebug.console.ranks_state import LAUNCHER, rank_label

# CSI sequences (ESC [ ... final byte), OSC sequences (ESC ] ... BEL or ESC \), and lone
# two-byte escapes. SGR (CSI ... m) is kept; the rest is dropped.
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
_TOKEN = re.compile(r"(\r\n|\r|\n|\x08)")


class TerminalText:
    """A bounded list of output lines plus the line being written."""

    def __init__(self, max_lines: int = 10_000) -> None:
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.current = ""
        self._carriage = False  # a \r was seen: the next text replaces the current line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending_escape = ""
        self.completed = 0
        """Lines completed since the start (including those that fell off the front)."""
        self.version = 0
        """Bumped on every change, so a view redraws only when something changed."""

    def feed(self, data: bytes) -> None:
        """Add bytes the script wrote."""
        text = self._pending_escape + self._decoder.decode(data)
        self._pending_escape = ""
        # An escape sequence cut at the end of a read is kept for the next one.
        cut = text.rfind("\x1b")
        if cut != -1 and not _ESCAPE.match(text, cut) and len(text) - cut < 64:
            text, self._pending_escape = text[:cut], text[cut:]
        text = _ESCAPE.sub(_keep_sgr, text)
        for piece in _TOKEN.split(text):
            if not piece:
                continue
            if piece in ("\n", "\r\n"):
                self.lines.append(self.current)
                self.current = ""
                self._carriage = False
                self.completed += 1
            elif piece == "\r":
                self._carriage = True
            elif piece == "\x08":
                self.current = self.current[:-1]
            else:
                piece = _CONTROL.sub("", piece)
                if self._carriage:
                    self.current = piece
                    self._carriage = False
                else:
                    self.current += piece
        self.version += 1

    def tail(self, count: int) -> list[str]:
        """The last ``count`` lines, the line being written included when it has text."""
        if count <= 0:
            return []
        lines = list(self.lines)[-count:] if len(self.lines) > count else list(self.lines)
        if self.current:
            lines = [*lines[1:], self.current] if len(lines) >= count else [*lines, self.current]
        return lines


def _keep_sgr(match: re.Match[str]) -> str:
    sequence = match.group(0)
    return sequence if sequence.startswith("\x1b[") and sequence.endswith("m") else ""


_RANK_PREFIX = re.compile(r"^\[(?:rank|default)?(\d{1,6})\]:")
"""A rank's mark at the start of a line of the launcher's output, in torch's formats: its C++
logging's ``[rank1]:``, torchrun's ``--tee`` header ``[default1]:`` (role "default" and the
local rank, which is the rank on one node) or ``[1]:`` (``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE``
set to ``[${rank}]:``)."""


class RankedText:
    """The output of every rank of a job, each line kept with its rank, in arrival order.

    Each rank's bytes go through a :class:`TerminalText` of its own (a progress bar's carriage
    returns and a line cut between two reads stay that rank's), and each completed line joins
    ``lines`` as ``(rank, text)``. Output of the launcher (rank ``LAUNCHER``) that starts with a
    rank's prefix (``_RANK_PREFIX``) is that rank's line, without the prefix; other launcher
    lines are the job's. A single process has one rank, 0: ``text(0)`` is all its output.
    """

    def __init__(self, max_lines: int = 10_000) -> None:
        self.max_lines = max_lines
        self._texts: dict[int, TerminalText] = {}
        self.lines: deque[tuple[int, str]] = deque(maxlen=max_lines)
        self.ranks: set[int] = set()
        """Every rank that has a line here (``LAUNCHER`` included)."""
        self.completed = 0
        """Lines completed since the start (including those that fell off the front)."""
        self.version = 0

    def text(self, rank: int) -> TerminalText:
        """One rank's own terminal text (made on first use)."""
        text = self._texts.get(rank)
        if text is None:
            text = self._texts[rank] = TerminalText(self.max_lines)
        return text

    def feed(self, rank: int, data: bytes) -> None:
        """Add bytes that ``rank`` wrote."""
        text = self.text(rank)
        before = text.completed
        text.feed(data)
        new = min(text.completed - before, len(text.lines))
        if new:
            lines = self.lines
            for i in range(len(text.lines) - new, len(text.lines)):
                line = text.lines[i]
                owner = rank
                if rank == LAUNCHER:
                    found = _RANK_PREFIX.match(line)
                    if found is not None:
                        owner = int(found.group(1))
                        line = line[found.end() :].removeprefix(" ")
                lines.append((owner, line))
                self.ranks.add(owner)
            self.completed += new
        if text.current:
            self.ranks.add(rank)
        self.version += 1

    def select(self, rank: int | None) -> list[tuple[int, str]]:
        """Completed lines of one rank (None: every rank), oldest first."""
        if rank is None:
            return list(self.lines)
        return [line for line in self.lines if line[0] == rank]

    def tail(self, count: int) -> list[str]:
        """The last ``count`` lines of every rank, marked, with the lines still being written
        (a progress bar) last: what the dashboard's output panel shows for a job."""
        if count <= 0:
            return []
        current = [
            (rank, text.current) for rank, text in sorted(self._texts.items()) if text.current
        ]
        take = max(0, count - len(current))
        done = list(self.lines)[-take:] if take else []
        return [marked(rank, line) for rank, line in [*done, *current][-count:]]


def mark(rank: int) -> str:
    """A line's rank mark as the output views show it (dim): ``[rank 1] `` or ``[torchrun] ``."""
    return f"\x1b[2m[{rank_label(rank)}]\x1b[0m "


def marked(rank: int, line: str) -> str:
    return mark(rank) + line
