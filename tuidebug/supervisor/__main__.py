"""``python -m tuidebug.supervisor RUN_ID``: the supervisor process of one run.

Started by ``tuidebug run`` in a session of its own, with stdin from /dev/null and its output
in the run's supervisor.log, so that neither a closed terminal nor SIGHUP reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from tuidebug.paths import run_paths
from tuidebug.supervisor.server import Supervisor


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tuidebug.supervisor RUN_ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # outlive the terminal that started us
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    supervisor = Supervisor(run_paths(args[0]))
    code = asyncio.run(supervisor.run())
    logging.getLogger("tuidebug.supervisor").info("script exited with code %s", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
