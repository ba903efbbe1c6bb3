"""The ranks of a ``torchrun`` job (key R): one row per rank, stragglers marked.

The state (``console/ranks_state.py``) is also the RunModel's ``ranks``: the header and the
loss chart show the rank chosen there (``k`` on the dashboard). For a single process the key
is off and nothing of this shows.
"""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.ranks_state import RanksState


def _screen(state: RanksState, send: SendCommand) -> Any:
    from tuidebug.console.screens.ranks import RanksScreen

    return RanksScreen(state)


EXTENSION = ConsoleExtension(
    name="ranks",
    make_state=RanksState,
    key="R",
    title="Ranks",
    make_screen=_screen,
)
