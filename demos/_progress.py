"""Console output shared by the demos: a progress bar in the style of tqdm.

Imported as ``from _progress import Progress``: a demo's own folder is first on ``sys.path``
whether it runs as ``python demos/x.py`` or under ``tuidebug run``.
"""

from __future__ import annotations

import os
import sys
import time


class Progress:
    """Console output in the style of tqdm.

    A bar rewritten in place with ``\\r`` every ``bar_every`` steps, a full line every
    ``log_every`` steps (and at the first and last), and a coloured summary at the end.
    """

    def __init__(self, total: int, log_every: int = 50, bar_every: int = 5) -> None:
        self.total = total
        self.log_every = log_every
        self.bar_every = bar_every
        self.start = time.perf_counter()
        self.last_time = self.start
        self.last_step = 0
        self.first_loss: float | None = None
        self.colour = "NO_COLOR" not in os.environ

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def line(self, text: str) -> None:
        """Print a full line, first erasing the bar that may be on the current line."""
        self._write(f"\r\x1b[K{text}\n")

    def update(self, step: int, loss: float, lr: float, extra: str = "") -> None:
        if self.first_loss is None:
            self.first_loss = loss
        if step == 1 or step % self.log_every == 0 or step == self.total:
            now = time.perf_counter()
            rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_step = now, step
            self.line(
                f"step {step:>6}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  "
                f"{rate:8.1f} steps/s{extra}"
            )
        elif step % self.bar_every == 0:
            width = 30
            filled = int(width * step / self.total)
            bar = "#" * filled + "-" * (width - filled)
            self._write(f"\r[{bar}] {step}/{self.total}  loss {loss:.4f}")

    def finish(self, steps: int, final_loss: float, extra: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        first = self.first_loss if self.first_loss is not None else final_loss
        green, bold, reset = ("\x1b[32m", "\x1b[1m", "\x1b[0m") if self.colour else ("", "", "")
        self.line(
            f"{bold}{green}finished{reset} {steps} steps in {elapsed:.1f}s "
            f"({steps / max(elapsed, 1e-9):.1f} steps/s), "
            f"loss {first:.4f} -> {bold}{final_loss:.4f}{reset}{extra}"
        )
        self.line(f"done: {steps} steps, final loss {final_loss:.4f}")
