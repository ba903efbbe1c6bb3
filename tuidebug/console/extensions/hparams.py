"""Live hyperparameters (key h): the optimizers' param groups and the script's tunables, set
at the run's next step boundary.

The state (:mod:`tuidebug.console.hparams_state`) folds the probe's ``Hparams`` table and
``HparamChanged`` events; the screen imports Textual and is built when first opened.
"""

from __future__ import annotations

from typing import Any

from tuidebug.console.extensions import ConsoleExtension, SendCommand
from tuidebug.console.hparams_state import HparamsState


def _screen(state: HparamsState, send: SendCommand) -> Any:
    from tuidebug.console.screens.hparams import HparamsScreen

    return HparamsScreen(state, send)


EXTENSION = ConsoleExtension(
    name="hparams",
    make_state=HparamsState,
    key="h",
    title="Hyperparameters",
    make_screen=_screen,
)
