"""Messages of the link between the supervisors of a job's nodes (``supervisor/nodes.py``).

They travel only on that TCP link, never to a probe or a console. The handshake proves on both
sides that the peer holds the job's token without sending it (``NodeHello`` -> ``NodeChallenge``
-> ``NodeProof``, then ``Welcome`` or ``Reject``); after it every frame carries a MAC. Then a
node's supervisor sends up what its ranks' probes send (their own kinds, unchanged), their
output (``Output``), ``RankJoined`` and ``RankGone``; node 0's sends down ``Deliver`` (a frame
for one rank's probe), ``Input``/``Resize`` (for a debugger on that node) and "stop-run".
"""

from __future__ import annotations

from typing import ClassVar

from tuidebug.wire.messages import Message

NODE_PROTOCOL = 1


class NodeHello(Message):
    """A node's supervisor asks to join node 0's: its node rank and a fresh random nonce."""

    retention: ClassVar[str] = "none"

    node_rank: int
    nonce: str
    protocol: int = NODE_PROTOCOL


class NodeChallenge(Message):
    """Node 0's answer: its own nonce, and its proof that it holds the token (the joining node
    checks it before it relays anything: an impostor could otherwise type into its ranks'
    debuggers)."""

    retention: ClassVar[str] = "none"

    nonce: str
    proof: str


class NodeProof(Message):
    """The joining node's proof that it holds the token."""

    retention: ClassVar[str] = "none"

    proof: str


class RankJoined(Message):
    """A rank's probe connected to its node's supervisor (``rank`` is the rank)."""

    retention: ClassVar[str] = "none"

    pid: int = 0
    """Its process id on its own node (shown, never signalled from another node)."""


class RankGone(Message):
    """A rank's probe hung up from its node's supervisor."""

    retention: ClassVar[str] = "none"


class Deliver(Message):
    """A frame for the probe of ``rank`` on the receiving node, as node 0 would have sent it
    to a probe of its own."""

    retention: ClassVar[str] = "none"

    frame: bytes
