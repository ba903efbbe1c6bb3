"""A job on more than one node: node 0's supervisor gathers the other nodes' ranks over TCP.

torchrun's model is one agent per node, and tuidebug's is the same: ``tuidebug run --nnodes K
--node-rank R --nproc-per-node N ...`` on every node starts a supervisor there, which starts
that node's torchrun and serves its ranks' probes over its Unix socket as on one node. The
supervisor of node 0 (the node that holds global ranks 0..N-1 in a static rendezvous,
torchrun's default) is the job's: it listens on a TCP port (``--tuidebug-port``, by default
the rendezvous port + 1, on the rendezvous host's address: the one the other nodes already
reach it by), and every other node's supervisor joins it there. A joined node relays up
everything its ranks' probes send (their messages unchanged, their output, their coming and
going) and passes down what node 0 sends its ranks. In node 0's supervisor each rank of
another node is a :class:`RemoteRank`, a stand-in for a probe: the ranks coordinator, the
store, the consoles and the extensions see it exactly as a local rank, so the collective pause
(``ranks.py``: ``pause-at`` S over the highest step of every rank) spans the nodes with no
change, and a console attached to node 0 sees every rank of the job. The coordinator of a
node other than 0 keeps only its local view and sends nothing: the job's pauses are node 0's
(a node that paused its ranks alone would hang the others inside their next collective).

Trust. Attaching is code execution (the debugger), so the TCP port takes nobody without the
job's token: a secret of at least 32 characters in a file (``--token-file``, on every node;
node 0 creates it when it does not exist), owned by the user and private (no group or other
permission bits, else refused). The token never crosses the wire: each side proves it holds
it with an HMAC over both sides' fresh nonces (node 0 proves it first, so a node never relays
its ranks, or types into their debuggers, for an impostor), and every frame after that
carries an HMAC-SHA256 under a key derived from the token and the nonces, over its direction
and sequence number, so a frame cannot be injected, replayed or reordered on the stream by
someone without the token. The port speaks only this handshake: no console attaches over TCP
(consoles attach on node 0 itself, through its Unix socket). What is not protected: the
frames are not encrypted (losses, stacks and the script's output are readable on the path):
keep the link on the cluster's private network or a tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuidebug.supervisor.clients import CONSOLE_BACKLOG_LIMIT, Client
from tuidebug.supervisor.ranks import LAUNCHER_RANK, RankOutput
from tuidebug.wire import auth, codec
from tuidebug.wire.messages import Command, Input, Message, Output, Reject, Resize, Welcome
from tuidebug.wire.node_messages import (
    NODE_PROTOCOL,
    Deliver,
    NodeChallenge,
    NodeHello,
    NodeProof,
    RankGone,
    RankJoined,
)

log = logging.getLogger("tuidebug.supervisor")

MIN_TOKEN_CHARS = 32
HANDSHAKE_TIMEOUT = 5.0
HANDSHAKE_FRAME_LIMIT = 4096  # bytes: a frame before the handshake is done is never larger
TAG = hashlib.sha256().digest_size
REJOIN_DELAY = (0.2, 2.0)  # seconds before a node tries again to join node 0: first, most
STATIC_MASTER = ("127.0.0.1", 29500)  # torchrun's --master-addr/--master-port defaults
COLLECTIVE = frozenset({"pause", "resume", "step", "run-to", "debug", "ckpt-save", "ckpt-restore"})


class TokenError(Exception):
    """The job's token file is missing, unsafe or too short."""


class NodeLinkError(Exception):
    """Joining node 0's supervisor failed: refused, or the peer does not hold the token."""


# --- the plan (``tuidebug run``) ----------------------------------------------------------------


def plan_nodes(
    launch: dict[str, Any], port: int | None, token_file: str | None
) -> dict[str, Any] | str | None:
    """What the supervisors of a job on more than one node need (kept in meta.json's
    ``launch`` as ``nodes``); a reason when the flags do not make it; None for a job on one
    node, or one whose node ranks torchrun assigns at the rendezvous (not gathered yet)."""
    args = [str(a) for a in launch.get("torchrun_args") or []]
    nnodes = int(str(launch.get("nnodes") or "1").split(":")[-1])
    backend = _flag(args, "--rdzv-backend") or "static"
    if nnodes <= 1 or backend != "static":
        if port is not None or token_file is not None:
            return (
                "--tuidebug-port and --token-file are for a job on more than one node "
                "with a static rendezvous (--nnodes 2 or more, torchrun's default backend)"
            )
        return None
    node_rank = int(launch.get("node_rank") or 0)
    if not 0 <= node_rank < nnodes:
        return f"--node-rank {node_rank}: a job on {nnodes} nodes has node ranks 0..{nnodes - 1}"
    host, rendezvous_port = rendezvous_address(args)
    if port is None:
        if rendezvous_port is None:
            return "--rdzv-endpoint has no port: give it one, or --tuidebug-port"
        port = rendezvous_port + 1
    if not 0 < port < 65536:
        return f"--tuidebug-port {port}: not a TCP port"
    if token_file is None:
        return (
            f"a job on {nnodes} nodes needs --token-file FILE on every node: the secret node "
            "0's supervisor and the others share (node 0 creates FILE when it is missing; "
            "copy it to the other nodes, mode 0600)"
        )
    path = Path(token_file).expanduser().absolute()
    try:
        read_job_token(path, create=node_rank == 0)
    except TokenError as error:
        return f"--token-file: {error}"
    return {
        "node_rank": node_rank,
        "nnodes": nnodes,
        "host": host,
        "port": port,
        "token_file": str(path),
    }


def rendezvous_address(args: list[str]) -> tuple[str, int | None]:
    """Where torchrun's static rendezvous meets (node 0's address), from its flags."""
    endpoint = _flag(args, "--rdzv-endpoint")
    if endpoint:
        host, colon, port = endpoint.rpartition(":")
        if not colon or "]" in port:  # no port ("node0", "[::1]")
            return endpoint.strip("[]"), None
        return host.strip("[]"), int(port)
    master = _flag(args, "--master-port")
    return (_flag(args, "--master-addr") or STATIC_MASTER[0]), int(master or STATIC_MASTER[1])


def _flag(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args[:-1]):
        if arg == name:
            return args[index + 1]
    return None


def read_job_token(path: Path, create: bool = False) -> str:
    """The job's token in ``path`` (created with a fresh one when ``create`` and missing);
    ``TokenError`` when the file is not the user's own, is readable by others, or is short."""
    if create:
        with contextlib.suppress(FileExistsError):
            auth.write_token(path)  # O_EXCL, 0600: never over a file that appeared meanwhile
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TokenError(f"{path}: no such file (a copy of node 0's)") from None
    except OSError as error:
        raise TokenError(f"{path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenError(f"{path}: not a regular file")
    if info.st_uid != os.getuid():
        raise TokenError(f"{path} belongs to uid {info.st_uid}, not to you ({os.getuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        mode = oct(stat.S_IMODE(info.st_mode))[2:]
        raise TokenError(f"{path} is open to others (mode {mode}): chmod 600 {path}")
    try:
        token = auth.read_token(path)
    except (OSError, UnicodeDecodeError) as error:
        raise TokenError(f"{path}: unreadable ({error})") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"{path}: a token of at least {MIN_TOKEN_CHARS} characters, e.g. "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return token


# --- the link: handshake and sealed frames ------------------------------------------------------


def _proof(token: str, label: str, *parts: str) -> str:
    """An HMAC that shows the token is held; ``label`` ("head", "node") keeps one side's
    proofs from ever passing for the other's."""
    text = "\0".join((label, *parts)).encode()
    return hmac.new(token.encode(), text, hashlib.sha256).hexdigest()


def _session_key(token: str, node_nonce: str, head_nonce: str, node_rank: int) -> bytes:
    text = "\0".join(("session", node_nonce, head_nonce, str(node_rank))).encode()
    return hmac.new(token.encode(), text, hashlib.sha256).digest()


async def _read_plain(reader: asyncio.StreamReader) -> Message:
    """One handshake frame (small, of a known kind) or ``ProtocolError``."""
    (length,) = codec.HEADER.unpack(await reader.readexactly(codec.HEADER.size))
    if length > HANDSHAKE_FRAME_LIMIT:
        raise codec.ProtocolError(f"a handshake frame of {length} bytes")
    message = codec.decode_body(await reader.readexactly(length))
    if message is None:
        raise codec.ProtocolError("a handshake frame of an unknown kind")
    return message


class Channel:
    """A node link after the handshake: each frame is the codec's, then an HMAC-SHA256 of its
    direction, its sequence number and its body (see the module's docstring)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        key: bytes,
        outgoing: bytes,
        incoming: bytes,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._key = key
        self._outgoing = outgoing
        self._incoming = incoming
        self._sent = 0
        self._received = 0

    def _tag(self, direction: bytes, seq: int, body: bytes) -> bytes:
        return hmac.new(self._key, direction + seq.to_bytes(8, "big") + body, "sha256").digest()

    def send(self, message: Message) -> None:
        """Queue one message (the transport writes without blocking)."""
        if self.writer.is_closing():
            return
        body = codec.encode(message)[codec.HEADER.size :]
        tag = self._tag(self._outgoing, self._sent, body)
        self._sent += 1
        self.writer.write(codec.HEADER.pack(len(body)) + body + tag)

    async def receive(self) -> Message:
        """The next message of a known kind; ``ProtocolError`` on a bad MAC or frame,
        ``asyncio.IncompleteReadError`` when the peer closed."""
        while True:
            (length,) = codec.HEADER.unpack(await self.reader.readexactly(codec.HEADER.size))
            if length > codec.MAX_FRAME:
                raise codec.ProtocolError(f"frame of {length} bytes exceeds the limit")
            data = await self.reader.readexactly(length + TAG)
            body, tag = data[:length], data[length:]
            if not hmac.compare_digest(tag, self._tag(self._incoming, self._received, body)):
                raise codec.ProtocolError("a frame whose MAC does not match (not from the peer)")
            self._received += 1
            message = codec.decode_body(body)
            if message is not None:  # a kind from a newer peer is skipped, as everywhere
                return message

    def backlog(self) -> int:
        """Bytes queued and not yet written."""
        return self.writer.transport.get_write_buffer_size()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def join(host: str, port: int, token: str, node_rank: int) -> Channel:
    """Connect to node 0's supervisor and authenticate both ways; ``NodeLinkError`` when it
    refuses or does not prove that it holds the token, ``OSError`` when it is not there."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), HANDSHAKE_TIMEOUT)
    try:
        return await asyncio.wait_for(
            _join(reader, writer, token, node_rank, f"{host}:{port}"), HANDSHAKE_TIMEOUT
        )
    except BaseException:
        writer.close()
        raise


async def _join(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    token: str,
    node_rank: int,
    where: str,
) -> Channel:
    mine = secrets.token_hex(32)
    writer.write(codec.encode(NodeHello(node_rank=node_rank, nonce=mine)))
    try:
        reply = await _read_plain(reader)
        if isinstance(reply, Reject):
            raise NodeLinkError(f"node 0's supervisor at {where} refused: {reply.reason}")
        if not isinstance(reply, NodeChallenge) or not hmac.compare_digest(
            reply.proof, _proof(token, "head", mine, reply.nonce)
        ):
            raise NodeLinkError(f"{where} does not hold the job's token: not node 0 of this job")
        proof = _proof(token, "node", reply.nonce, mine, str(node_rank))
        writer.write(codec.encode(NodeProof(proof=proof)))
        answer = await _read_plain(reader)
    except (asyncio.IncompleteReadError, codec.ProtocolError) as error:
        raise NodeLinkError(f"{where} broke off the handshake ({error})") from None
    if isinstance(answer, Reject):
        raise NodeLinkError(f"node 0's supervisor at {where} refused: {answer.reason}")
    if not isinstance(answer, Welcome):
        raise NodeLinkError(f"{where} answered {type(answer).__name__}, not a welcome")
    key = _session_key(token, mine, reply.nonce, node_rank)
    return Channel(reader, writer, key, outgoing=b"up", incoming=b"down")


# --- the supervisor's side ----------------------------------------------------------------------


class NodeHost(Protocol):
    """What the node link uses of its supervisor (server.py): its own handlers, which a rank of
    another node goes through exactly as a local probe does."""

    probes: set[Client]
    rank_output: RankOutput | None
    debugger_rank: int

    def request_stop(self) -> None: ...
    def _say(self, level: str, text: str) -> None: ...
    def _on_probe_hello(self, client: Client) -> None: ...
    def _on_probe_message(self, client: Client, message: Message) -> None: ...
    def _on_output(self, data: bytes, rank: int = 0) -> None: ...
    def _on_console_message(self, message: Message) -> None: ...
    def _drop_client(self, client: Client) -> None: ...


@dataclass(frozen=True)
class NodePlan:
    """``plan_nodes``'s result, as read back from meta.json."""

    node_rank: int
    nnodes: int
    host: str
    port: int
    token_file: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class NodeRole:
    """The hooks the supervisor calls in a job on more than one node (no-ops here)."""

    def __init__(self, host: NodeHost, plan: NodePlan, run_id: str) -> None:
        self.host = host
        self.plan = plan
        self.run_id = run_id
        self.token = ""

    async def start(self) -> None:
        """Read the token and start serving (node 0) or joining (the others)."""
        try:
            self.token = read_job_token(Path(self.plan.token_file))
        except TokenError as error:
            self.host._say("error", f"this node's ranks only: {error}")
            return
        await self._start()

    async def _start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """The run is over: close the link."""

    def from_probe(self, message: Message) -> None:
        """A local probe sent ``message`` (its rank set)."""

    def on_output(self, data: bytes, rank: int) -> None:
        """A local rank wrote ``data`` (``LAUNCHER_RANK``: torchrun)."""

    def probe_joined(self, client: Client) -> None:
        """A local probe connected."""

    def probe_gone(self, client: Client) -> None:
        """A probe hung up."""

    def on_console(self, message: Message) -> bool:
        """A console's message; True when the node link took it (the supervisor does not)."""
        return False


def for_run(host: NodeHost, launch: dict[str, Any] | None, run_id: str) -> NodeRole | None:
    """Node 0's or another node's role for a job on more than one node; None otherwise."""
    found = (launch or {}).get("nodes")
    if not found:
        return None
    plan = NodePlan(**found)
    return Head(host, plan, run_id) if plan.node_rank == 0 else Member(host, plan, run_id)


def coordinator_send(
    role: NodeRole | None, send: Callable[[int, Command], None]
) -> Callable[[int, Command], None]:
    """What a node's ranks coordinator sends through: nowhere on a node other than 0 (the job's
    pauses are node 0's; this node's coordinator keeps the local view only)."""
    if isinstance(role, Member):
        return lambda rank, command: None
    return send


class RemoteRank(Client):
    """A rank of another node in node 0's supervisor, where a probe would be: what is sent to
    it goes down its node's link. Its pid is 0 here: a pid of another machine must never be
    signalled on this one (the stop's SIGKILL and the faulthandler dump skip pid 0)."""

    def __init__(self, rank: int, node: _Node) -> None:
        super().__init__("probe", rank, node.channel.writer, pid=0)
        self.node = node

    def send(self, frame: bytes) -> None:
        if not self.closed:
            self.node.deliver(self.rank, frame)

    def close(self) -> None:
        self.closed = True  # the node's link stays up for its other ranks


class _Node:
    """One joined node, seen from node 0."""

    def __init__(self, node_rank: int, channel: Channel) -> None:
        self.node_rank = node_rank
        self.channel = channel
        self.ranks: dict[int, RemoteRank] = {}

    def deliver(self, rank: int, frame: bytes) -> None:
        if self.channel.backlog() > CONSOLE_BACKLOG_LIMIT:
            log.warning("node %d fell too far behind: dropping its link", self.node_rank)
            self.channel.close()  # its ranks are dropped when the read ends; it joins again
            return
        self.channel.send(Deliver(rank=rank, frame=frame))


class Head(NodeRole):
    """Node 0's supervisor: listens for the other nodes and stands their ranks in."""

    def __init__(self, host: NodeHost, plan: NodePlan, run_id: str) -> None:
        super().__init__(host, plan, run_id)
        self.nodes: dict[int, _Node] = {}
        self._server: asyncio.Server | None = None
        self._closing = False
        self._links: set[asyncio.Task[Any]] = set()  # each joined node's connection

    async def _start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.plan.host, self.plan.port
            )
        except OSError as error:
            self.host._say(
                "error",
                f"cannot listen for the other nodes on {self.plan.where} ({error.strerror}): "
                "the console sees this node's ranks only",
            )
            return
        log.info("listening for the job's other nodes on %s", self.plan.where)

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for node in list(self.nodes.values()):
            node.channel.close()
        if self._links:  # let them see their end (else the loop's end cancels them, loudly)
            await asyncio.wait(self._links, timeout=1.0)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            joined = await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, codec.ProtocolError, OSError):
            joined = None
        if joined is None:
            log.info("refused a node link from %s", peer)
            with contextlib.suppress(Exception):
                await writer.drain()  # the Reject, when there is one
            writer.close()
            return
        channel, node_rank = joined
        old = self.nodes.get(node_rank)
        if old is not None:  # it joins again (its old link is half open): the new one wins
            old.channel.close()
        node = self.nodes[node_rank] = _Node(node_rank, channel)
        self.host._say("info", f"node {node_rank} joined from {peer[0] if peer else '?'}")
        task = asyncio.current_task()
        assert task is not None  # a connection's handler runs as a task of its own
        self._links.add(task)
        try:
            while True:
                self._from_node(node, await channel.receive())
        except (asyncio.IncompleteReadError, codec.ProtocolError, ConnectionError, OSError) as e:
            log.info("node %d's link closed: %s", node_rank, e)
        finally:
            self._links.discard(task)
            lost = sorted(node.ranks)
            for remote in list(node.ranks.values()):
                self.host._drop_client(remote)
            node.ranks.clear()
            channel.close()
            if self.nodes.get(node_rank) is node:
                del self.nodes[node_rank]
                if lost and not self._closing:
                    ranks = ", ".join(map(str, lost))
                    self.host._say("warning", f"node {node_rank}'s link is gone, with rank {ranks}")
                elif not self._closing:
                    self.host._say("info", f"node {node_rank} left (its ranks ended)")

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[Channel, int] | None:
        hello = await _read_plain(reader)
        if not isinstance(hello, NodeHello) or hello.protocol != NODE_PROTOCOL:
            writer.write(codec.encode(Reject(reason="not a node of this job")))
            return None
        if len(hello.nonce) < 32 or not 0 < hello.node_rank < self.plan.nnodes:
            writer.write(codec.encode(Reject(reason="not a node of this job")))
            return None
        mine = secrets.token_hex(32)
        proof = _proof(self.token, "head", hello.nonce, mine)
        writer.write(codec.encode(NodeChallenge(nonce=mine, proof=proof)))
        answer = await _read_plain(reader)
        expected = _proof(self.token, "node", mine, hello.nonce, str(hello.node_rank))
        if not isinstance(answer, NodeProof) or not hmac.compare_digest(answer.proof, expected):
            writer.write(codec.encode(Reject(reason="bad token")))
            return None
        writer.write(codec.encode(Welcome(run_id=self.run_id)))
        key = _session_key(self.token, hello.nonce, mine, hello.node_rank)
        return Channel(reader, writer, key, outgoing=b"down", incoming=b"up"), hello.node_rank

    def _from_node(self, node: _Node, message: Message) -> None:
        if isinstance(message, RankJoined):
            taken = {probe.rank for probe in self.host.probes}
            if message.rank in taken:
                self.host._say(
                    "warning", f"node {node.node_rank} says rank {message.rank} is its own: taken"
                )
                return
            remote = node.ranks[message.rank] = RemoteRank(message.rank, node)
            self.host._on_probe_hello(remote)
        elif isinstance(message, RankGone):
            gone = node.ranks.pop(message.rank, None)
            if gone is not None:
                self.host._drop_client(gone)
        elif isinstance(message, Output):
            if message.rank in node.ranks and self.host.rank_output is not None:
                self.host.rank_output.write(message.rank, message.data)
                self.host._on_output(message.data, message.rank)
        elif isinstance(message, Command):
            self.host._on_console_message(message)  # from a console on that node
        else:
            sender = node.ranks.get(message.rank)
            if sender is not None:  # a node speaks for its own ranks only
                self.host._on_probe_message(sender, message)

    def on_console(self, message: Message) -> bool:
        if isinstance(message, Command) and message.name == "stop-run":
            for node in list(self.nodes.values()):
                node.channel.send(message)  # every node stops its torchrun
        elif isinstance(message, Resize):
            for node in list(self.nodes.values()):
                node.channel.send(message)
        elif isinstance(message, Input):
            for node in list(self.nodes.values()):
                if self.host.debugger_rank in node.ranks:  # the debugger runs on that node
                    node.channel.send(message)
                    return True
        return False


class Member(NodeRole):
    """A node other than 0: joins node 0's supervisor (again, whenever the link drops) and
    relays its ranks up and node 0's commands down."""

    def __init__(self, host: NodeHost, plan: NodePlan, run_id: str) -> None:
        super().__init__(host, plan, run_id)
        self.channel: Channel | None = None
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._keep_joined())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.channel is not None:
            self.channel.close()

    async def _keep_joined(self) -> None:
        delay = REJOIN_DELAY[0]
        said = ""
        while True:
            try:
                channel = await join(
                    self.plan.host, self.plan.port, self.token, self.plan.node_rank
                )
            except NodeLinkError as error:
                if str(error) != said:  # once, not every retry
                    said = str(error)
                    self.host._say("error", str(error))
            except (OSError, asyncio.TimeoutError) as error:
                log.info("node 0's supervisor at %s not reachable yet: %s", self.plan.where, error)
            else:
                delay, said = REJOIN_DELAY[0], ""
                await self._serve(channel)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REJOIN_DELAY[1])

    async def _serve(self, channel: Channel) -> None:
        self.channel = channel
        self.host._say("info", f"joined node 0's supervisor at {self.plan.where}")
        for probe in list(self.host.probes):  # the ranks that came before the link
            channel.send(RankJoined(rank=probe.rank, pid=probe.pid))
        try:
            while True:
                message = await channel.receive()
                if isinstance(message, Deliver):
                    for probe in list(self.host.probes):
                        if probe.rank == message.rank:
                            probe.send(message.frame)
                elif isinstance(message, Command) and message.name == "stop-run":
                    self.host.request_stop()
                elif isinstance(message, (Input, Resize)):
                    self.host._on_console_message(message)  # for this node's ptys
        except (asyncio.IncompleteReadError, codec.ProtocolError, ConnectionError, OSError) as e:
            log.info("the link to node 0 closed: %s", e)
        finally:
            self.channel = None
            channel.close()
        self.host._say("warning", f"lost node 0's supervisor at {self.plan.where}: joining again")

    def _up(self, message: Message) -> None:
        channel = self.channel
        if channel is None:
            return  # not joined: node 0 learns this node's ranks again when it joins
        if channel.backlog() > CONSOLE_BACKLOG_LIMIT:
            log.warning("node 0's supervisor fell too far behind: dropping the link")
            channel.close()
            return
        channel.send(message)

    def from_probe(self, message: Message) -> None:
        self._up(message)

    def on_output(self, data: bytes, rank: int) -> None:
        if rank != LAUNCHER_RANK:  # torchrun's own lines stay in this node's log
            self._up(Output(rank=rank, data=data))

    def probe_joined(self, client: Client) -> None:
        self._up(RankJoined(rank=client.rank, pid=client.pid))

    def probe_gone(self, client: Client) -> None:
        self._up(RankGone(rank=client.rank))

    def on_console(self, message: Message) -> bool:
        if not isinstance(message, Command):
            return False  # keystrokes and sizes are for this node's own ptys
        if self.channel is not None:
            self._up(message)  # the job's commands are node 0's
            return True
        if message.name in COLLECTIVE:
            self.host._say(
                "warning",
                f"{message.name}: not joined to node 0's supervisor at {self.plan.where}; "
                "the job's pauses go through it",
            )
            return True
        return False
