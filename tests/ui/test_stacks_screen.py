"""The stacks screen (key w) under Pilot, fed scripted Stacks messages as the supervisor sends
them: a rank that answered itself and one dumped by faulthandler."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from test_dashboard import STARTED, ScriptedSource, history, run_info

from tuidebug.console.app import TuidebugApp
from tuidebug.console.screens.stacks import StacksScreen
from tuidebug.wire.messages import Command, HistoryDone
from tuidebug.wire.stack_messages import STACKS, Frame, Stacks, StacksDone, ThreadStack


def rank_stacks(rank: int, request: str, source: str = "python") -> Stacks:
    training = ThreadStack(
        name="MainThread",
        ident=0x7F00 + rank,
        training=True,
        frames=[
            Frame("train.py", 40, "<module>", "train()"),
            Frame("train.py", 31, "train", "dist.all_reduce(loss)"),
            Frame("/torch/distributed/c10d.py", 2800, "all_reduce", "work.wait()"),
        ],
    )
    loader = ThreadStack(
        name="pin_memory",
        ident=0x8F00 + rank,
        daemon=True,
        frames=[Frame("/torch/utils/data/pin.py", 12, "_pin_memory_loop", "r = q.get()")],
    )
    return Stacks(
        rank=rank,
        step=41,
        request=request,
        pid=100 + rank,
        time=1.0e9,
        source=source,
        threads=[loader, training],
    )


def _text(widget: Any) -> str:
    console = Console(width=110, record=True)
    console.print(widget.content)
    return console.export_text()


def test_w_asks_every_rank_and_shows_their_threads_training_first() -> None:
    async def scenario() -> None:
        source = ScriptedSource([[run_info(), *history(50), HistoryDone(steps=50)]])
        app = TuidebugApp(source=source)
        async with app.run_test(size=(110, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("w")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, StacksScreen)
            asked = [m for m in source.sent if isinstance(m, Command) and m.name == STACKS]
            assert len(asked) == 1 and asked[0].rank == -1
            request = asked[0].args["id"]
            assert "asking every rank" in _text(screen.query_one("#stacks-status"))

            app.model.fold(
                [
                    rank_stacks(0, request),
                    rank_stacks(1, request, source="faulthandler"),
                    StacksDone(
                        request=request, ranks=[0, 1, 2], unanswered=[2], note="rank 2: gone"
                    ),
                ]
            )
            await pilot.pause(0.2)
            status = _text(screen.query_one("#stacks-status"))
            assert "2 of 3 rank(s)" in status and "no stacks from 2: rank 2: gone" in status
            text = _text(screen.query_one("#stacks-text"))
            assert "rank 0 (pid 100):" in text and "rank 1 (pid 101, via faulthandler):" in text
            # The training thread first, innermost frame last (like a traceback).
            rank0 = text[text.index("rank 0") : text.index("rank 1")]
            assert rank0.index("(training thread)") < rank0.index("pin_memory")
            assert rank0.index("in train") < rank0.index("in all_reduce")
            assert "dist.all_reduce(loss)" in rank0

            await pilot.press("t")
            await pilot.pause(0.2)
            assert "pin_memory" not in _text(screen.query_one("#stacks-text"))

            await pilot.press("r")
            await pilot.pause(0.1)
            asked = [m for m in source.sent if isinstance(m, Command) and m.name == STACKS]
            assert len(asked) == 2 and asked[1].args["id"] != request
            assert "asking every rank for its stacks... (0 s)" in _text(
                screen.query_one("#stacks-status")
            )

            # The run ends: nobody to ask any more, and the screen says so.
            app.model.fold([run_info(state="finished", ended=STARTED + 60, exit_code=0)])
            await pilot.press("r")
            await pilot.pause(0.2)
            asked = [m for m in source.sent if isinstance(m, Command) and m.name == STACKS]
            assert len(asked) == 2
            assert "the run is over" in _text(screen.query_one("#stacks-status"))
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, StacksScreen)

    asyncio.run(scenario())
