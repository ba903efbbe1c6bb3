"""The layers screen: every module's shapes and statistics (key L)."""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.layers_model import LayersModel
from tuidebug.wire.messages import Command


def _screen(state: LayersModel, send: SendCommand) -> Any:
    from tuidebug.console.screens.layers import LayersScreen

    def focus(index: int) -> None:
        send(Command(name="layers-focus", args={"layer": str(index)}, rank=-1))

    return LayersScreen(state, on_focus=focus)


def _wants_screen(state: Any) -> bool:
    return state.jump_to is not None


EXTENSION = ConsoleExtension(
    name="layers",
    make_state=LayersModel,
    key="L",
    title="Layers",
    make_screen=_screen,
    wants_screen=_wants_screen,
)
