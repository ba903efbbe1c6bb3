"""Handing the console's terminal to the script's debugger, through the supervisor.

While ipdb (or the script's own pdb) runs in the training process, the console suspends its
app and runs ``run_bridge``: the terminal goes raw, keystrokes go to the script's pty as
``Input`` messages, the pty's output comes back as ``Output`` and is written straight to the
terminal, and the pty takes the terminal's size. The bridge ends when the probe says the
debugger closed, or when the person presses Ctrl-] (the debugger stays open; ``d`` in the
console goes back to it). Plain blocking I/O on a second connection: the app's event loop is
suspended meanwhile.
"""

from __future__ import annotations

import os
import select
import socket
import termios
import tty

from tuidebug.paths import RunPaths
from tuidebug.wire import auth, codec
from tuidebug.wire.messages import (
    DebuggerClosed,
    Hello,
    Input,
    Message,
    Output,
    Resize,
    Welcome,
)

DETACH_KEY = b"\x1d"  # Ctrl-]


class BridgeError(Exception):
    """The bridge could not connect to the run."""


def run_bridge(paths: RunPaths, stdin_fd: int = 0, stdout_fd: int = 1) -> str:
    """Bridge the terminal to the script's pty; returns "closed", "detached" or "lost"."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(str(paths.socket))
        sock.sendall(codec.encode(Hello(role="bridge", token=auth.read_token(paths.token))))
        decoder = codec.FrameDecoder()
        first: list[Message] = []
        while not first:
            data = sock.recv(65536)
            if not data:
                raise BridgeError("the supervisor closed the connection")
            first = decoder.feed(data)
        if not isinstance(first[0], Welcome):
            raise BridgeError("the supervisor refused the bridge")
    except OSError as error:
        sock.close()
        raise BridgeError(f"cannot reach the run: {error}") from None
    sock.settimeout(None)
    saved = termios.tcgetattr(stdin_fd)
    size = _size(stdout_fd)
    sock.sendall(codec.encode(Resize(cols=size[0], rows=size[1])))
    tty.setraw(stdin_fd)
    try:
        pending = first[1:]
        while True:
            for message in pending:
                if isinstance(message, Output):
                    _write_all(stdout_fd, message.data)
                elif isinstance(message, DebuggerClosed):
                    return "closed"
            watched: list[socket.socket | int] = [sock, stdin_fd]
            readable, _, _ = select.select(watched, [], [], 0.25)
            now = _size(stdout_fd)
            if now != size:
                size = now
                sock.sendall(codec.encode(Resize(cols=size[0], rows=size[1])))
            pending = []
            if stdin_fd in readable:
                keys = os.read(stdin_fd, 4096)
                if DETACH_KEY in keys:
                    return "detached"
                sock.sendall(codec.encode(Input(data=keys)))
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    return "lost"
                pending = decoder.feed(data)
    except (OSError, codec.ProtocolError):
        return "lost"
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        sock.close()


def _size(fd: int) -> tuple[int, int]:
    try:
        columns, lines = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return columns, lines


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
