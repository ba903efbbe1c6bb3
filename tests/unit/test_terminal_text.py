"""TerminalText turns pty bytes into lines the way a terminal shows them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuidebug.console.terminal_text import RankedText, TerminalText


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


# --- cursor moves and erases: progress bars redrawn over several rows -------------------------

CAPTURES = Path(__file__).parent / "pty_captures"  # real bytes: see capture.py there
SGR = re.compile(r"\x1b\[[0-9;]*m")


def plain(lines: list[str]) -> list[str]:
    return [SGR.sub("", line).strip() for line in lines]


def fed(data: bytes, chunk: int) -> TerminalText:
    text = TerminalText()
    for start in range(0, len(data), chunk):
        text.feed(data[start : start + chunk])
    return text


@pytest.mark.parametrize("bar", ["rich", "tqdm"])
@pytest.mark.parametrize("chunk", [1 << 20, 4096, 7])
def test_lightnings_bars_leave_what_a_terminal_shows(bar: str, chunk: int) -> None:
    # The demo's real output (112 steps: epoch 0 is 109 batches, validations after batch 50
    # and 100): the redrawn bar is one line, its validation bar drawn below it and erased.
    text = fed((CAPTURES / f"lightning_{bar}_bar.bin").read_bytes(), chunk)
    lines = plain(list(text.lines))
    assert lines[0].startswith("lightning_classifier: 112 steps")
    assert lines[-1].startswith("done: 112 steps")
    assert len(lines) == 3, lines
    assert lines[1].startswith("Epoch 1") and "3/3" in lines[1]  # the bar's last drawing
    assert not any("Validation" in line for line in lines)
    assert text.completed == 3 and text.reach == 1 and text.settled == 2
    assert plain(text.live()) == [lines[2]]  # the bar's row can still be redrawn: live
    assert plain(text.tail(5)) == lines


def test_tqdm_nested_bar_goes_down_and_back_up() -> None:
    text = TerminalText()
    text.feed(b"start\r\n\rEpoch 0:  10%| 1/10\r\n\rval 0/4\x1b[A\rEpoch 0:  10%| 1/10")
    assert list(text.lines) == ["start", "Epoch 0:  10%| 1/10"] and text.current == "val 0/4"
    text.feed(b"\r\n\rval 4/4\x1b[A\r\n\r          \x1b[A\rEpoch 0:  20%| 2/10")
    assert list(text.lines) == ["start", "Epoch 0:  20%| 2/10"]  # replaced in place
    assert text.tail(5) == ["start", "Epoch 0:  20%| 2/10"]  # the erased row is blank
    assert text.live() == ["Epoch 0:  20%| 2/10"] and text.settled == 1
    text.feed(b"\r\ndone\r\n")  # the bar closes: down to the blank row, which "done" fills
    assert list(text.lines) == ["start", "Epoch 0:  20%| 2/10", "done"]
    assert text.completed == 3


def test_erase_line_and_the_other_moves() -> None:
    text = TerminalText()
    text.feed(b"a\nb\nc\n\x1b[2F\x1b[2Kbee\x1b[E\x1b[Kcee\x1b[1B")
    assert list(text.lines) == ["a", "bee", "cee"] and text.current == ""
    text.feed(b"xyz\x1b[K!")  # erase to the end at the end of the text: nothing goes
    assert text.current == "xyz!"
    text.feed(b"\x1b[1K-")  # erase to the start from the end: the line goes
    assert text.current == "-"
    text.feed(b"\x1b[99A>")  # never above the first line kept
    assert list(text.lines) == ["a>", "bee", "cee"] and text.reach == 3
    text.feed(b"\x1b[9B\r\n")
    assert text.completed == 4 and list(text.lines)[-1] == "-"


def test_a_job_keeps_a_ranks_redrawn_bar_as_one_live_line() -> None:
    ranked = RankedText()
    ranked.feed(0, b"hello\r\n\rEpoch 0: 1/9\r\n\rval 1/4\x1b[A")
    ranked.feed(1, b"rank 1 line\r\n")
    assert ranked.select(None) == [(0, "hello"), (1, "rank 1 line")]
    ranked.feed(0, b"\r\n\r      \x1b[A\rEpoch 0: 2/9")
    assert ranked.live(None) == [(0, "Epoch 0: 2/9")] and ranked.live(1) == []
    assert plain(ranked.tail(9)) == [
        "[rank 0] hello",
        "[rank 1] rank 1 line",
        "[rank 0] Epoch 0: 2/9",
    ]
    ranked.feed(0, b"\r\ndone\r\n")
    # The bar's line is settled once "done" is below it; "done" itself stays live.
    assert ranked.select(0) == [(0, "hello"), (0, "Epoch 0: 2/9")]
    assert ranked.live(0) == [(0, "done")] and ranked.completed == 3


@pytest.mark.parametrize("chunk", [1 << 20, 4096, 7])
def test_an_ipdb_session_leaves_what_a_terminal_shows(chunk: int) -> None:
    # The real bytes of tests/e2e/test_debugging_tmux.py's ipdb session (the run's pty log):
    # prompt_toolkit writes blank rows under each prompt, goes back up over them (ESC[nA),
    # left to the line's start (ESC[nD) and erases below (ESC[J). Without following them the
    # output panel ended on those blank rows and the script's last line was not in view.
    text = fed((CAPTURES / "ipdb_session.bin").read_bytes(), chunk)
    lines = plain(list(text.lines))
    assert lines[0].startswith("tuidebug: ipdb at") and "step 39" in lines[0]
    assert lines[-8:] == [
        "0.061671823263168335",
        "ipdb> model.training",
        "True",
        "ipdb> lt batch",
        "tensor[64x8] float32 cpu x∈[-3.154, 4.101] μ=0.09639 σ=1.065",
        "ipdb> marker = 'changed in ipdb'",
        "ipdb> c",
        "marker: changed in ipdb",
    ]
    assert lines[-9] == "ipdb> loss.item()"  # no blank rows left between prompts
    assert text.reach == 0 and text.settled == text.completed == len(lines)
