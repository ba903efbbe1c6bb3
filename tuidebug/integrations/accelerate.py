"""Hugging Face Accelerate (``accelerator.backward``, ``accelerator.accumulate``) under
``tuidebug run``.

Accelerate has no trainer and no callbacks: the loop is the script's, so the probe's own
hooks find the model, the optimizer's step (the boundary) and the loss, as in a plain loop.
Two things of Accelerate's would mislead them, and one wrapper fixes both:
``accelerate.accelerator.Accelerator.backward`` (wrapped when the script imports Accelerate,
while the probe lives; see ``tuidebug/integrations/__init__.py``).

* The loss: ``accelerator.backward(loss)`` backpropagates ``loss / gradient_accumulation_steps``
  (through ``scaler.scale`` under fp16). During the call the probe is told the loss the script
  passed (``Probe.set_given_loss``), so each backward reports that one and a step's loss is the
  mean of its micro-batches' losses, what the script itself would print.
* The step: inside ``with accelerator.accumulate(model):`` the script calls
  ``optimizer.step()`` every batch, and Accelerate's optimizer wrapper calls the real
  ``step`` only on the batch that completes an accumulation (``accelerator.sync_gradients``);
  torch's optimizer hook, hence the boundary, fires then only. But the probe, before it saw
  any optimizer step, takes a second backward with no step between as the end of a step, which
  would make the first micro-batch a step of its own. With accumulation (more than one step)
  the wrapper says up front that optimizer steps are the boundary (``Probe.expect_source``).

A script that also uses ``tuidebug.attach(...).step()``, and the Hugging Face Trainer (which
trains through an ``Accelerator``, integration ``hf.py``), keep their own boundary: the hook's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuidebug.integrations.owner import Owner

log = logging.getLogger("tuidebug.probe")


def patch(module: ModuleType, owner: Owner) -> None:
    """``module`` is ``accelerate.accelerator``: wrap its ``Accelerator.backward``."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def backward(accelerator: Any, loss: Any, *args: Any, **kwargs: Any) -> Any:
            if not owner.live:
                return original(accelerator, loss, *args, **kwargs)
            probe = owner.probe
            try:
                if int(getattr(accelerator, "gradient_accumulation_steps", 1) or 1) > 1:
                    probe.expect_source("optimizer", "optimizer.step() through Accelerate")
                probe.set_given_loss(loss)
            except Exception as error:  # the backward runs all the same, unreported
                log.warning("tuidebug: could not follow Accelerator.backward (%r)", error)
            try:
                return original(accelerator, loss, *args, **kwargs)
            finally:
                probe.set_given_loss(None)

        return backward

    owner.wrap_method(module.Accelerator, "backward", make)
