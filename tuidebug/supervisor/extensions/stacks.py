"""Answers a console's stacks request (``w`` in the console, ``tuidebug stacks``) for every rank.

The supervisor relays the console's ``Command(STACKS)`` to the probes as it does any command;
this extension sees it too and gathers the answers (``supervisor/stacks.py``): the faulthandler
fallback for a rank whose Python does not answer, then the ``StacksDone`` the client waits for.
"""

from __future__ import annotations

import asyncio

from tuidebug.supervisor.extensions import SupervisorApi
from tuidebug.supervisor.stacks import StackGatherer
from tuidebug.wire.messages import Command, Message
from tuidebug.wire.stack_messages import STACKS


async def run(supervisor: SupervisorApi) -> None:
    gatherer = StackGatherer(supervisor)
    tasks: set[asyncio.Task[object]] = set()

    def on_message(message: Message, from_probe: bool) -> None:
        if not from_probe and isinstance(message, Command) and message.name == STACKS:
            # Begun here, before the supervisor relays the command: no answer can come first.
            request = gatherer.begin(message.args.get("id", ""), send=False)
            task = asyncio.ensure_future(gatherer.finish(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    supervisor.listen(on_message)
    await asyncio.Event().wait()  # the listener does the work, for the life of the script
