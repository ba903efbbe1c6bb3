"""Training frameworks (Lightning, Hugging Face Trainer): see ``tuidebug/integrations/``.

Installed with the other extensions, so only in a run that has a console link; it imports no
framework, only waits for the script to import one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuidebug.probe.probe import Probe


def install(probe: Probe, options: dict[str, Any]) -> None:
    from tuidebug import integrations

    integrations.install(probe, options)
