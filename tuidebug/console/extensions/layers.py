"""The layers screen: every module's shapes and statistics (key L), per rank in a job."""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.layers_model import RankedLayers
from tuidebug.wire.messages import Command


def _screen(state: RankedLayers, send: SendCommand) -> Any:
    from tuidebug.console.screens.layers import LayersScreen

    screen = LayersScreen(state.model(0), ranks=state)

    def focus(index: int) -> None:
        # In a job, only the rank on screen histograms the layer (every rank for one process).
        rank = screen.rank if len(state.ranks()) > 1 else -1
        send(Command(name="layers-focus", args={"layer": str(index)}, rank=rank))

    screen.on_focus = focus
    return screen


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
