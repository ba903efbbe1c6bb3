"""Messages of the training loop's own milestones (probe -> consoles): an epoch ended, a
validation ran.

The framework integrations send them (``tuidebug/integrations/``: Lightning's
``on_validation_end`` / ``on_train_epoch_end``, the Hugging Face Trainer's ``on_evaluate`` /
``on_epoch_end``); a plain loop has no such events the probe could see. Each is kept in the
run's history (retention "all"), so a console that attaches later marks every one of them on
the loss chart ("ep 2", "val").
"""

from __future__ import annotations

import msgspec

from tuidebug.wire.messages import Message

EPOCH = "epoch"
VALIDATION = "validation"


class LoopEvent(Message):
    """A milestone of the loop at the boundary of ``step`` (the last optimizer step before it).

    ``kind``: :data:`EPOCH` (``epoch`` is the number of epochs completed: 1 when the first one
    ends) or :data:`VALIDATION` (``epoch``: the epoch it ran in, counted from 1; ``metrics``:
    the values it logged that could be read without a device sync, such as ``val_loss`` or
    ``eval_loss``; values on a GPU come with the next step's scalars only).
    """

    kind: str
    epoch: int = 0
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    framework: str = ""
    """"lightning" or "transformers"."""
