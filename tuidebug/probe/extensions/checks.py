"""The training-bug checks in the probe (tuidebug/checks/engine.py) and the LR finder.

Options: ``ignore`` (rule ids), ``overfit_batch`` (bool), ``checks_every`` (steps between
sampled steps), ``max_steps`` (``tuidebug check --steps N``: end the script with SystemExit(0)
at that boundary), ``lr_find`` (a dict: start the range test at once; with ``exit`` the script
ends after it), ``checks`` (False turns the rules off). ``[tool.tuidebug]`` of the script's
nearest pyproject.toml is read too (tuidebug/checks/config.py).

Console commands: ``checks-ignore`` (args: rule) silences a rule; ``lr-find`` (args: steps,
start, end) runs the range test on the next steps and restores the run's state after it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuidebug.checks.config import load_config
from tuidebug.wire.messages import Command, Notice

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe


def _script_folder() -> Path:
    """The script's folder: the bootstrap installs extensions while argv is still its own."""
    argv = sys.argv
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("bootstrap"):
        return Path(argv[1]).resolve().parent
    return Path.cwd()


def install(probe: Probe, options: dict[str, Any]) -> None:
    from tuidebug.checks.engine import ChecksEngine
    from tuidebug.checks.lrfind import LrFinder

    config = load_config(_script_folder())
    every = options.get("checks_every") or config.sample_every or 50
    max_steps = options.get("max_steps")
    engine = None
    if options.get("checks", True):
        engine = ChecksEngine(
            probe.send,
            probe.rank,
            config,
            every=int(every),
            ignore=set(options.get("ignore") or ()),
            max_steps=int(max_steps) if max_steps else None,
            overfit_batch=bool(options.get("overfit_batch")),
            source=lambda: probe.source,
        )
        probe.add_observer(engine)
    finder = LrFinder(probe)
    probe.add_observer(finder)
    lr_find = options.get("lr_find")
    if isinstance(lr_find, dict):
        finder.request(lr_find)

    def ignore(command: Command) -> None:
        rule = command.args.get("rule", "")
        if engine is not None and rule:
            engine.silence(rule)
            probe.send(
                Notice(
                    rank=probe.rank,
                    step=probe.step,
                    level="info",
                    text=f"check {rule} silenced for this run",
                )
            )

    probe.gate.add_action("checks-ignore", ignore)
    probe.gate.add_action("lr-find", lambda command: finder.request(dict(command.args)))
