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
