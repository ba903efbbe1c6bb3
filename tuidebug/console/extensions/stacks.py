"""Where is each rank now (key w): every thread's stack of every rank, asked for on demand."""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.stacks_state import StacksState


def _screen(state: StacksState, send: SendCommand) -> Any:
    from tuidebug.console.screens.stacks import StacksScreen

    return StacksScreen(state, send)


EXTENSION = ConsoleExtension(
    name="stacks",
    make_state=StacksState,
    key="w",
    title="Where (stacks)",
    make_screen=_screen,
)
