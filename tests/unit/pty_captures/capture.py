"""Record every byte the Lightning demo writes to a terminal (the fixtures of this folder).

    python tests/unit/pty_captures/capture.py OUT.bin rich -- --steps 112 --val-every 50
    python tests/unit/pty_captures/capture.py OUT.bin tqdm -- --steps 112 --val-every 50

The demo runs on a pty of 100x30, as under ``tuidebug run``. ``rich`` is Lightning's default
bar when ``rich`` is installed (RichProgressBar: a live display that redraws its rows with
``ESC[2K ESC[1A``); ``tqdm`` swaps in TQDMProgressBar (what Lightning shows without rich: nested
bars that go down with ``\\n`` and back up with ``ESC[A``).
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Run inside the child for "tqdm": the demo's Trainer gets Lightning's TQDM bar.
TQDM = """
import functools, runpy, sys
import lightning.pytorch as L
from lightning.pytorch.callbacks import TQDMProgressBar
init = L.Trainer.__init__
@functools.wraps(init)
def with_tqdm(self, *args, **kwargs):
    init(self, *args, **{**kwargs, "callbacks": [TQDMProgressBar()]})
L.Trainer.__init__ = with_tqdm
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def capture(out: Path, bar: str, args: list[str]) -> int:
    demo = str(ROOT / "demos" / "lightning_classifier.py")
    command = [sys.executable, demo, *args]
    if bar == "tqdm":
        command = [sys.executable, "-c", TQDM, demo, *args]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    data = bytearray()
    while True:
        readable, _, _ = select.select([master], [], [], 1.0)
        if readable:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child hung up
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    out.write_bytes(bytes(data))
    return proc.wait()


if __name__ == "__main__":
    target, kind, _, *rest = sys.argv[1:]
    sys.exit(capture(Path(target), kind, rest))
