"""What the end-to-end tests share: the command line, screen patterns, the terminal fixture."""

from __future__ import annotations

import re
import sys

TUIDEBUG = f"{sys.executable} -m tuidebug.cli"
EXITED = re.compile(r"EXIT=\d")
HEADER = re.compile(r"step ([\d,]+)\s.*loss (\d+\.\d+|\d\.\d+e-\d+)")


def header_step(screen: str) -> int:
    match = HEADER.search(screen)
    assert match, f"no step/loss in the header:\n{screen}"
    return int(match.group(1).replace(",", ""))
