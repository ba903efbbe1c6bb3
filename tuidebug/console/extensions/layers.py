"""The layers screen: every module's shapes and statistics (key L), per rank in a job."""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.layers_model import RankedLayers
from tuidebug.wire.messages import Command


def _screen(state: RankedLayers, send: SendCommand) -> Any:
    from tuidebug.console.screens.layers import LayersScreen

    def focus(index: int) -> None:
        send(Command(name="layers-focus", args={"layer": str(index)}, rank=-1))

    return LayersScreen(state.model(0), on_focus=focus, ranks=state)


def _wants_screen(state: Any) -> bool:
    return state.jump_to is not None


EXTENSION = ConsoleExtension(
    name="layers",
    make_state=RankedLayers,
    key="L",
    title="Layers",
    make_screen=_screen,
    wants_screen=_wants_screen,
)
