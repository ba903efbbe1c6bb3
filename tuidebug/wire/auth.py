"""Who may talk to a run: the same user, holding the run's token.

Attaching to a run is code execution (the debugger runs arbitrary Python in the training
process), so three locks stand in the way: the socket lives in a 0700 directory and is itself
0600; the supervisor checks the connecting process's uid with SO_PEERCRED; and the first frame
must carry the random token stored (0600) in the run's folder.
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import struct
from pathlib import Path


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return secrets.token_hex(32)


def write_token(path: Path) -> str:
    """Create ``path`` with mode 0600 holding a new token, and return the token."""
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def read_token(path: Path) -> str:
    """The token stored at ``path``."""
    return path.read_text().strip()


def token_matches(expected: str, offered: str) -> bool:
    """Compare tokens in constant time."""
    return hmac.compare_digest(expected.encode(), offered.encode())


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (None where unsupported)."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:  # not Linux; the token still protects the socket
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_is_owner(sock: socket.socket) -> bool:
    """True when the peer runs as our own user (or the platform cannot tell)."""
    uid = peer_uid(sock)
    return uid is None or uid == os.getuid()
