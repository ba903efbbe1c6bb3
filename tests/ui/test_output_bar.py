"""Lightning's progress bar in the console: one line in the output panel and screen, redrawn in
place, fed with the real bytes the demo wrote to its terminal (tests/unit/pty_captures/)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

from test_dashboard import run_info
from textual.widgets import RichLog, Static

from tuidebug.console.app import TuidebugApp
from tuidebug.console.screens.output import OutputScreen
from tuidebug.wire.messages import HistoryDone, Message, Output

CAPTURES = Path(__file__).parents[1] / "unit" / "pty_captures"
SGR = re.compile(r"\x1b\[[0-9;]*m")


class QueueSource:
    """A live run whose batches the test hands over one at a time."""

    live = True

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Message]] = asyncio.Queue()

    async def batches(self) -> AsyncIterator[list[Message]]:
        while True:
            yield await self.queue.get()

    def send(self, message: Message) -> None:
        pass

    def close(self) -> None:
        pass


def outputs(data: bytes, size: int = 4096) -> list[Message]:
    """The bytes as the supervisor relays a pty's reads: in chunks."""
    return [Output(data=data[i : i + size]) for i in range(0, len(data), size)]


def plain(text: str) -> list[str]:
    return [SGR.sub("", line).strip() for line in text.splitlines() if line.strip()]


def test_a_redrawn_bar_is_one_line_in_the_output_screen_and_panel() -> None:
    data = (CAPTURES / "lightning_tqdm_bar.bin").read_bytes()
    # Cut in the middle of the first validation: its bar is drawn below the epoch's bar.
    cut = data.index(b"Validation DataLoader 0:  50%")

    async def scenario() -> None:
        source = QueueSource()
        app = TuidebugApp(source=source)
        async with app.run_test(size=(120, 40)) as pilot:
            source.queue.put_nowait([run_info(), HistoryDone()])
            source.queue.put_nowait(outputs(data[:cut]))
            await pilot.pause(0.3)
            panel = plain(str(app.dashboard.query_one("#output").render()))
            assert panel[0].startswith("lightning_classifier: 112 steps")
            assert panel[1].startswith("Epoch 0:  46%") and "50/109" in panel[1]
            assert panel[2].startswith("Validation DataLoader 0:  25%") and len(panel) == 3

            await pilot.press("o")
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, OutputScreen)
            log = screen.query_one(RichLog)
            live = screen.query_one("#output-live", Static)
            assert [line.text for line in log.lines] == [panel[0]]
            assert plain(str(live.render())) == panel[1:]  # both bars, as they are now

            source.queue.put_nowait(outputs(data[cut:]))
            await pilot.pause(0.5)
            lines = [line.text.strip() for line in log.lines]
            assert len(lines) == 2 and lines[1].startswith("Epoch 1: 100%"), lines
            assert not any("Validation" in line for line in lines)
            (last,) = plain(str(live.render()))  # below the bar, which may still redraw it
            assert last.startswith("done: 112 steps, final loss")

            await pilot.press("escape")
            await pilot.pause(0.2)
            panel = plain(str(app.dashboard.query_one("#output").render()))
            assert [line.split(":")[0] for line in panel] == [
                "lightning_classifier",
                "Epoch 1",
                "done",
            ]

    asyncio.run(scenario())
