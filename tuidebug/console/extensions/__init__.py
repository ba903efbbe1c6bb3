"""Console extensions: features that add state, a screen and a key to the console.

Each module here defines ``EXTENSION = ConsoleExtension(...)``. The RunModel gives every
extension its own state object and passes it the messages it folds; the app binds each
extension's key to open its screen, and asks it once per frame whether it wants its screen
shown now (the layers screen jumps open on a first NaN).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from tuidebug.wire.messages import Command, Message

if TYPE_CHECKING:  # the RunModel loads extensions and stays free of Textual
    from textual.screen import Screen
    from textual.widget import Widget

SendCommand = Callable[[Command], None]


class ExtensionState(Protocol):
    """What an extension's state must do: fold every batch of messages the console gets."""

    def fold(self, messages: Iterable[Message]) -> None:
        """Fold a batch of messages (ignore kinds it does not know)."""


@dataclass(frozen=True)
class ConsoleExtension:
    """One feature of the console."""

    name: str
    """Short id; the state is ``run_model.ext[name]``."""
    make_state: Callable[[], ExtensionState]
    """A fresh state object (plain Python, no Textual)."""
    key: str
    """The key that opens the screen."""
    title: str
    """The footer's description of the key."""
    make_screen: Callable[[Any, SendCommand], Screen[Any]]
    """The screen, over the state; commands go to the run with ``send`` (import Textual inside)."""
    wants_screen: Callable[[Any], bool] = lambda _state: False
    """Checked each frame: True to open the screen now (e.g. jump to a NaN)."""
    make_dashboard_widget: Callable[[Any], Widget] | None = None
    """A compact summary for the dashboard (under the header); it must have ``sync()``,
    called once per frame, and redraw only when its part of the state changed."""
    dashboard_row: bool = False
    """The summary takes a row of its own, under the one-line summaries (which share a row
    and take their own width: a widget of several full-width lines would be pushed off it)."""


@cache
def extensions() -> tuple[ConsoleExtension, ...]:
    """Every console extension, in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        extension = getattr(module, "EXTENSION", None)
        if isinstance(extension, ConsoleExtension):
            found.append(extension)
    return tuple(found)
