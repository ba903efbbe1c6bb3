"""Every message kind this version knows, gathered from the modules that define them.

Core messages live in ``messages.py``; each feature keeps its own kinds in its own module
(``layer_messages.py``, ...), listed here. A feature module that is not there yet is skipped, so
a feature can be developed, and removed, without touching the others.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Union

from tuidebug.wire.messages import Message

MESSAGE_MODULES = (
    "tuidebug.wire.messages",
    "tuidebug.wire.layer_messages",
    "tuidebug.wire.checkpoint_messages",
    "tuidebug.wire.gpu_messages",
    "tuidebug.wire.check_messages",
    "tuidebug.wire.hparam_messages",
    "tuidebug.wire.stack_messages",
    "tuidebug.wire.phase_messages",
    "tuidebug.wire.node_messages",
    "tuidebug.wire.loop_messages",
)


@functools.cache
def message_types() -> tuple[type[Message], ...]:
    """All concrete message classes, by name (stable order)."""
    for name in MESSAGE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
    found: dict[str, type[Message]] = {}
    pending = list(Message.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ in MESSAGE_MODULES:
            found[cls.__name__] = cls
    return tuple(found[name] for name in sorted(found))


def message_union() -> Any:
    """The tagged union msgspec decodes frames into."""
    return Union[message_types()]  # noqa: UP007 - built from a runtime tuple
