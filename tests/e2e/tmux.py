"""A real terminal for end-to-end tests: a tmux server of the test's own, driven by keys.

The console runs exactly as a person runs it; the test reads the screen with capture-pane.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid


class Tmux:
    """One tmux server (own socket) with one window running an interactive bash."""

    def __init__(self, env: dict[str, str], cols: int = 100, rows: int = 30) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed (`.ci/run` installs it with apt-get)")
        self.socket = f"td-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self._tmux(
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            str(cols),
            "-y",
            str(rows),
            f"env {exports} PS1='$ ' TERM=xterm-256color bash --norc --noprofile",
        )
        self.wait_for("$", timeout=10)

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {proc.stderr}")
        return proc.stdout

    def type(self, command: str) -> None:
        """Type a shell command and press Enter."""
        self._tmux("send-keys", "-t", "main", "-l", command)
        self._tmux("send-keys", "-t", "main", "Enter")

    def keys(self, *keys: str) -> None:
        """Press keys (tmux key names: q, Escape, C-c, ...)."""
        self._tmux("send-keys", "-t", "main", *keys)

    def screen(self) -> str:
        """The visible screen as text."""
        return self._tmux("capture-pane", "-p", "-t", "main")

    def alternate_screen(self) -> bool:
        """True while a full-screen program holds the terminal's alternate screen."""
        return self._tmux("display-message", "-p", "-t", "main", "#{alternate_on}").strip() == "1"

    def wait_for(self, text: str | re.Pattern[str], timeout: float = 30.0) -> str:
        """Wait until ``text`` (a string, or a compiled regex) is on screen; return the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text.search(screen) if isinstance(text, re.Pattern) else text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear within {timeout}s; screen:\n{screen}")

    def resize(self, cols: int, rows: int) -> None:
        self._tmux("resize-window", "-t", "main", "-x", str(cols), "-y", str(rows))

    def kill(self) -> None:
        """Close the terminal: every program in it gets SIGHUP."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)
