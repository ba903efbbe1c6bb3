"""The script's terminal output, as lines a panel can show.

The script runs on a pty, so what arrives is what a terminal would get: UTF-8 split at any
byte, carriage returns that redraw a progress bar in place, colour codes (SGR), and other
control sequences (erase line, cursor moves) that only make sense to a real terminal.

``TerminalText`` keeps colour codes in the lines (Rich's ``Text.from_ansi`` renders them), makes
a carriage return replace the line being written, and follows the few sequences progress bars
and prompts redraw with: cursor up and down (``ESC[nA``/``B``/``F``/``E``; tqdm's nested bars
write ``\n`` down to their row and ``ESC[A`` back, Rich's live display ``ESC[2K ESC[1A`` over
its rows), erase line (``ESC[K``, ``ESC[2K``), erase below (``ESC[J``: ipdb's prompt_toolkit
writes blank rows under its prompt, goes back up and erases them) and cursor left past a
line's text (``ESC[nD``: back to its start). Moving up reopens a line already completed: what
is written there replaces it in place, and a newline below the last line moves down instead of
starting one. Every other control sequence is dropped. It is plain Python (no Textual, no Rich),
so it is cheap to test and to feed at any rate.

A line the cursor went back to once may be redrawn again (a bar above a validation bar): the
last ``reach`` completed lines (``reach``: the furthest the cursor has gone up, 0 for output
without cursor moves) stay *live*. Views that append lines for good (the output screen, a job's
merged lines) take the ``settled`` ones and show the live ones apart (:meth:`live`).
"""

from __future__ import annotations

import codecs
import re
from collections import deque

from tuidebug.console.ranks_state import LAUNCHER, rank_label

# CSI sequences (ESC [ ... final byte), OSC sequences (ESC ] ... BEL or ESC \), and lone
# two-byte escapes. SGR (CSI ... m) is kept, and so are the cursor moves and erases that
# TerminalText follows (_MOVE); the rest is dropped.
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_MOVE = r"\x1b\[[0-9]*[ABDEFJK]"
_KEPT = re.compile(rf"\x1b\[[0-9;]*m|{_MOVE}")
_SGR = re.compile(r"\x1b\[[0-9;]*m")
_CONTROL = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")
_TOKEN = re.compile(rf"(\r\n|\r|\n|\x08|{_MOVE})")
MAX_UP = 64
"""How far up the cursor may go (rows of a live display; a bar nested deeper is rare)."""


class TerminalText:
    """A bounded list of output lines plus the line being written."""

    def __init__(self, max_lines: int = 10_000) -> None:
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.current = ""
        self._carriage = False  # a \r was seen: the next text replaces the line
        self._row = 0  # where the cursor is: 0 the current line, r the r-th completed from the end
        self.reach = 0
        """The furthest up the cursor has gone: the last ``reach`` completed lines are live."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending_escape = ""
        self.completed = 0
        """Lines completed since the start (including those that fell off the front)."""
        self.version = 0
        """Bumped on every change, so a view redraws only when something changed."""

    @property
    def settled(self) -> int:
        """How many of the ``completed`` lines the cursor cannot return to."""
        return self.completed - self.reach

    def live(self) -> list[str]:
        """The lines still redrawn in place: the last ``reach`` completed ones, then the line
        being written when it has text."""
        reach = min(self.reach, len(self.lines))
        lines = [self.lines[i] for i in range(len(self.lines) - reach, len(self.lines))]
        return [*lines, self.current] if self.current.strip() else lines

    def feed(self, data: bytes) -> None:
        """Add bytes the script wrote."""
        text = self._pending_escape + self._decoder.decode(data)
        self._pending_escape = ""
        # An escape sequence cut at the end of a read is kept for the next one.
        cut = text.rfind("\x1b")
        if cut != -1 and not _ESCAPE.match(text, cut) and len(text) - cut < 64:
            text, self._pending_escape = text[:cut], text[cut:]
        text = _ESCAPE.sub(_keep, text)
        for i, piece in enumerate(_TOKEN.split(text)):
            if not piece:
                continue
            if not i % 2:  # text between two tokens
                piece = _CONTROL.sub("", piece)
                if self._carriage and not _SGR.sub("", piece):
                    # Only a colour code after a \r: it writes nothing over the line yet.
                    self._set(self._get() + piece)
                    continue
                self._set(piece if self._carriage else self._get() + piece)
                self._carriage = False
            elif piece in ("\n", "\r\n"):
                if self._row:  # below a reopened line: move down to the next one
                    self._row -= 1
                    self._carriage = True  # the pty turns \n into \r\n
                    continue
                self.lines.append(self.current)
                self.current = ""
                self._carriage = False
                self.completed += 1
            elif piece == "\r":
                self._carriage = True
            elif piece == "\x08":
                self._set(self._get()[:-1])
            else:
                self._control(piece)
        self.version += 1

    def _get(self) -> str:
        return self.lines[-self._row] if self._row else self.current

    def _set(self, line: str) -> None:
        if self._row:
            self.lines[-self._row] = line
        else:
            self.current = line

    def _control(self, sequence: str) -> None:
        """A cursor move or an erase (``_MOVE``); the column is only known after a ``\\r``."""
        final, count = sequence[-1], int(sequence[2:-1] or 0)
        if final == "K":  # erase in line: 0 to its end, 1 to its start, 2 all of it
            if count == 2 or (count in (0, 1) and (count == 0) == self._carriage):
                self._set("")
            return
        if final == "D":  # left: back to the line's start when it goes past the text
            if count >= len(_SGR.sub("", self._get())):
                self._carriage = True
            return
        if final == "J":  # erase in display; 0: from the cursor down (2, 3: the screen, kept)
            if count == 0:
                self._erase_below()
            return
        if final in "AF":  # up (F: and to the line's start)
            self._row = min(self._row + max(1, count), len(self.lines), MAX_UP)
            self.reach = max(self.reach, self._row)
        else:  # B, E: down, never below the current line
            self._row = max(0, self._row - max(1, count))
        if final in "EF":
            self._carriage = True

    def _erase_below(self) -> None:
        """``ESC[J`` on a reopened line: the lines below it are gone, and it is the last one
        (prompt_toolkit, ipdb's prompt, writes blank rows below its prompt, goes back up over
        them and erases them: without this they stayed, as rows of blank output)."""
        if self._row:
            for _ in range(self._row - 1):
                self.lines.pop()
            self.current = self.lines.pop()
            self.completed -= self._row
            self.reach -= self._row  # reach >= row: the lines that settled stay settled
            self._row = 0
        if self._carriage:  # at the line's start: the line itself goes too
            self.current = ""

    def tail(self, count: int) -> list[str]:
        """The last ``count`` lines, the line being written included when it has text."""
        if count <= 0:
            return []
        lines = list(self.lines)[-count:] if len(self.lines) > count else list(self.lines)
        if self.current.strip():  # a blank line below a bar (its validation bar erased) is not
            lines = [*lines[1:], self.current] if len(lines) >= count else [*lines, self.current]
        return lines


def _keep(match: re.Match[str]) -> str:
    sequence = match.group(0)
    return sequence if _KEPT.fullmatch(sequence) else ""


_RANK_PREFIX = re.compile(r"^\[(?:rank|default)?(\d{1,6})\]:")
"""A rank's mark at the start of a line of the launcher's output, in torch's formats: its C++
logging's ``[rank1]:``, torchrun's ``--tee`` header ``[default1]:`` (role "default" and the
local rank, which is the rank on one node) or ``[1]:`` (``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE``
set to ``[${rank}]:``)."""


class RankedText:
    """The output of every rank of a job, each line kept with its rank, in arrival order.

    Each rank's bytes go through a :class:`TerminalText` of its own (a progress bar's carriage
    returns and cursor moves, and a line cut between two reads, stay that rank's), and each
    settled line joins ``lines`` as ``(rank, text)`` (a rank's live lines: :meth:`live`).
    Output of the launcher (rank ``LAUNCHER``) that starts with a rank's prefix
    (``_RANK_PREFIX``) is that rank's line, without the prefix; other launcher lines are the
    job's. A single process has one rank, 0: ``text(0)`` is all its output.
    """

    def __init__(self, max_lines: int = 10_000) -> None:
        self.max_lines = max_lines
        self._texts: dict[int, TerminalText] = {}
        self.lines: deque[tuple[int, str]] = deque(maxlen=max_lines)
        self.ranks: set[int] = set()
        """Every rank that has a line here (``LAUNCHER`` included)."""
        self._copied: dict[int, int] = {}  # per rank: its settled lines already in ``lines``
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
        text.feed(data)
        copied = self._copied.get(rank, 0)
        new = min(text.settled - copied, len(text.lines) - text.reach)
        if new > 0:
            lines = self.lines
            end = len(text.lines) - text.reach
            for i in range(end - new, end):
                owner, line = _owned(rank, text.lines[i])
                lines.append((owner, line))
                self.ranks.add(owner)
            self.completed += new
        self._copied[rank] = max(copied, text.settled)
        if text.live():
            self.ranks.add(rank)
        self.version += 1

    def select(self, rank: int | None) -> list[tuple[int, str]]:
        """Settled lines of one rank (None: every rank), oldest first."""
        if rank is None:
            return list(self.lines)
        return [line for line in self.lines if line[0] == rank]

    def live(self, rank: int | None) -> list[tuple[int, str]]:
        """The lines still redrawn in place (progress bars) of one rank (None: every rank)."""
        found = [
            _owned(owner, line)
            for owner, text in sorted(self._texts.items())
            for line in text.live()
        ]
        return found if rank is None else [line for line in found if line[0] == rank]

    def tail(self, count: int) -> list[str]:
        """The last ``count`` lines of every rank, marked, with the lines still being written
        (a progress bar) last: what the dashboard's output panel shows for a job."""
        if count <= 0:
            return []
        live = self.live(None)
        take = max(0, count - len(live))
        done = list(self.lines)[-take:] if take else []
        return [marked(rank, line) for rank, line in [*done, *live][-count:]]


def _owned(rank: int, line: str) -> tuple[int, str]:
    """Whose line it is: a launcher's line that starts with a rank's prefix is that rank's."""
    if rank == LAUNCHER:
        found = _RANK_PREFIX.match(line)
        if found is not None:
            return int(found.group(1)), line[found.end() :].removeprefix(" ")
    return rank, line


def mark(rank: int) -> str:
    """A line's rank mark as the output views show it (dim): ``[rank 1] `` or ``[torchrun] ``."""
    return f"\x1b[2m[{rank_label(rank)}]\x1b[0m "


def marked(rank: int, line: str) -> str:
    return mark(rank) + line
