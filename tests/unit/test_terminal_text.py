"""TerminalText turns pty bytes into lines the way a terminal shows them."""

from __future__ import annotations

from tuidebug.console.terminal_text import TerminalText


def test_carriage_return_redraws_the_line_in_place() -> None:
    text = TerminalText()
    text.feed(b"[#---] 1/4\r[##--] 2/4\r[###-] 3/4\n")
    assert list(text.lines) == ["[###-] 3/4"]


def test_colour_is_kept_and_other_control_sequences_are_dropped() -> None:
    text = TerminalText()
    text.feed(b"\r\x1b[Kstep \x1b[32mok\x1b[0m\x1b[2A\x1b]0;title\x07 done\n")
    assert list(text.lines) == ["step \x1b[32mok\x1b[0m done"]


def test_utf8_and_escape_sequences_split_across_reads() -> None:
    text = TerminalText()
    for chunk in (b"loss \xe2", b"\x82\xac \x1b[", b"1mbold\x1b[0", b"m\n"):
        text.feed(chunk)
    assert list(text.lines) == ["loss € \x1b[1mbold\x1b[0m"]


def test_tail_includes_the_line_being_written() -> None:
    text = TerminalText()
    text.feed(b"a\nb\nc\npartial")
    assert text.tail(2) == ["c", "partial"]
    assert text.tail(10) == ["a", "b", "c", "partial"]
    assert text.tail(0) == []


def test_history_is_bounded_and_counts_completed_lines() -> None:
    text = TerminalText(max_lines=3)
    text.feed(b"".join(b"%d\n" % i for i in range(10)))
    assert list(text.lines) == ["7", "8", "9"] and text.completed == 10


def test_backspace_and_stray_controls() -> None:
    text = TerminalText()
    text.feed(b"abc\x08d\x07\x00e\n")
    assert list(text.lines) == ["abde"]
