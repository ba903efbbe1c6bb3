"""The help screen: what each key does, and where to read more."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tuidebug.console.extensions import extensions

KEYS = [
    ("?", "this help"),
    ("p", "pause at the next step boundary / resume"),
    ("r", "resume"),
    ("n", "run exactly one more step, then pause"),
    (
        "d",
        "while paused: ipdb in the run, at your training loop's line (c continues, "
        "q comes back paused); after a crash: post-mortem",
    ),
    ("ctrl+]", "in the debugger: back to the console, leaving the debugger open"),
    ("g", "run to step K, then pause"),
    ("e", "pause every K steps (0: off)"),
    ("b", "pause when a condition holds: loss > 5, loss nonfinite, grad_norm > 10, step == 500"),
    ("l", "loss chart: linear / log scale"),
    ("v", "loss chart: compare with another run (its loss on the same axes), or none"),
    ("o", "the script's full output"),
    (
        "k",
        "a job of several ranks: the loss chart and header show rank 0, 1, ..., then every "
        "rank's band; in the output, layers and alerts screens: which rank",
    ),
    ("q / ctrl+c", "quit the console: asks whether to stop the run or leave it running"),
    ("escape", "close a dialog or screen"),
]

ABOUT = (
    "tuidebug shows a PyTorch training run live. The run goes on without the console: "
    "quit and choose 'leave it running', then `tuidebug attach` brings the console back "
    "with the whole history. `tuidebug ls` lists runs."
)


class HelpScreen(ModalScreen[None]):
    """Key bindings and a few words on how the console works."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        extension_keys = [(e.key, f"the {e.title.lower()} screen") for e in extensions()]
        for key, what in [*KEYS, *extension_keys]:
            table.add_row(key, what)
        with Vertical():
            yield Static("[b]tuidebug — keys[/b]\n")
            yield Static(table)
            yield Static(f"\n{ABOUT}", classes="about")
