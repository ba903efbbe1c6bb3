"""The supervisor: one per run, alive as long as the script, in its own session.

It owns the script's pty, the run's folder (metadata, SQLite history, output log) and the
socket that probes (the ranks of the job) and consoles connect to. It keeps the run going when
consoles come and go, and gives a console that attaches late the whole history first.

Everything runs on one asyncio loop; the only blocking work is SQLite, done in short batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from tuidebug.paths import RunPaths, pid_alive
from tuidebug.probe.rank_io import ENV_RANK_TTYS  # stdlib only: the name the ranks read
from tuidebug.supervisor import extensions, nodes
from tuidebug.supervisor import ranks as job
from tuidebug.supervisor.child import open_rank_ptys, set_winsize, spawn_on_pty, torchrun_command
from tuidebug.supervisor.clients import Client
from tuidebug.supervisor.store import HistoryStore, event_body
from tuidebug.wire import auth, codec
from tuidebug.wire.checkpoint_messages import CheckpointRestored, CheckpointSaved
from tuidebug.wire.messages import (
    LINK_PACE,
    PAUSE_AT,
    Command,
    DebuggerClosed,
    DebuggerOpened,
    Hello,
    HistoryDone,
    Input,
    Message,
    Output,
    PauseAck,
    Paused,
    PauseRequest,
    RankEnded,
    Reject,
    Resize,
    Resumed,
    RunInfo,
    ScriptError,
    Steps,
    Welcome,
)

log = logging.getLogger("tuidebug.supervisor")

HANDSHAKE_TIMEOUT = 5.0
PROBE_DRAIN_TIMEOUT = 2.0  # seconds the end of a run waits for its probes' last batches
FLUSH_INTERVAL = 0.5
OUTPUT_REPLAY_BYTES = 256 * 1024  # the tail of the script's output a new console is sent
STOP_GRACE = (5.0, 5.0)  # seconds after SIGINT before SIGTERM, and after SIGTERM before SIGKILL
DEBUGGER_CONTEXT_BYTES = 4096  # output before a debugger opened, replayed to a late bridge
PROMPTS = ("ipdb>", "(Pdb)", "(pdb)")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b.")


class Supervisor:
    """Runs one script and serves its probes and consoles."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        meta = paths.read_meta()
        self.script: str = meta["script"]
        self.args: list[str] = list(meta.get("args", []))
        self.cwd: str = meta.get("cwd") or os.getcwd()
        self.token = auth.read_token(paths.token)
        self.started = time.time()
        self.state = "starting"
        self.exit_code: int | None = None
        self.ended: float | None = None
        self.error_seen = False
        self.stop_requested = False
        self.steps_seen = 0
        self.store = HistoryStore(paths.history)
        self.options: dict[str, Any] = dict(meta.get("options") or {})
        """The run's options (``tuidebug run`` flags), for the supervisor's extensions."""
        self.probes: set[Client] = set()
        self._rank_pids: dict[int, int] = {}  # a job's ranks as they said hello: rank -> pid
        self.consoles: set[Client] = set()
        self._links_watched = False  # what the probes' links were last told (_pace_links)
        self.bridges: set[Client] = set()
        self.held = False  # the script raised and waits for a post-mortem or a release
        self.debugger_output: bytearray | None = None  # output since a debugger opened
        self.prompt_debugger = False  # a debugger the probe did not announce (its prompt seen)
        self._recent_output = bytearray()
        self.latest: dict[tuple[str, int], bytes] = {}  # "latest"-retention messages, by kind
        self.process: Any = None
        self.master_fd = -1
        self._output_log = open(paths.pty_log, "ab")  # noqa: SIM115 - lives as long as the run
        self._done = asyncio.Event()
        self._listeners: list[Callable[[Message, bool], None]] = []  # extensions' (listen)
        # A torchrun job (ranks.py): its launch, one pty per local rank, the pause coordinator.
        self.launch: dict[str, Any] | None = meta.get("launch")
        self.world_size = int(meta.get("world_size") or 1)
        self.rank_ptys: dict[int, tuple[int, int]] = {}  # rank -> (master, slave)
        self.ranks: job.RankCoordinator | None = None
        self.rank_output: job.RankOutput | None = None
        self.debugger_rank = 0  # the rank whose pty a bridge talks to
        self._recent_by_rank: dict[int, bytearray] = {}
        # More than one node (nodes.py): node 0's supervisor gathers the others' ranks.
        self.nodes = nodes.for_run(self, self.launch, paths.run_id)
        if self.launch is not None:
            send = nodes.coordinator_send(self.nodes, self._send_to_ranks)
            self.ranks = job.RankCoordinator(send, self._say)
            self.rank_output = job.RankOutput(self._output_log)

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Start the script, serve until it ends, and return its exit code."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            server = await asyncio.start_unix_server(self._on_connect, path=str(self.paths.socket))
        finally:
            os.umask(old_umask)
        os.chmod(self.paths.socket, 0o600)
        if self.nodes is not None:
            await self.nodes.start()

        env = dict(os.environ)  # the supervisor was started with the user's environment
        env["TUIDEBUG_SOCKET"] = str(self.paths.socket)
        env["TUIDEBUG_TOKEN_FILE"] = str(self.paths.token)
        env["TUIDEBUG_OUTPUT_LOG"] = str(self.paths.pty_log)
        meta = self.paths.read_meta()
        if meta.get("break_on"):
            env["TUIDEBUG_BREAK_ON"] = "\n".join(meta["break_on"])
        if meta.get("hold_on_error"):
            env["TUIDEBUG_HOLD_ON_ERROR"] = "1"
        if meta.get("options"):
            env["TUIDEBUG_OPTIONS"] = json.dumps(meta["options"])
        command = None
        if self.launch is not None:
            command = self._prepare_job(env)
        self.process, self.master_fd = spawn_on_pty(
            self.script, self.args, self.cwd, env, command=command
        )
        self._write_meta()
        loop.add_reader(self.master_fd, self._on_pty_readable)
        for rank, (master, _) in self.rank_ptys.items():
            loop.add_reader(master, self._on_rank_pty_readable, rank)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        flusher = asyncio.create_task(self._flush_periodically())
        extension_tasks = extensions.start_all(self)

        code = await loop.run_in_executor(None, self.process.wait)
        if code < 0:
            code = 128 - code  # killed by a signal: report it the way a shell does (SIGINT: 130)
        await self._drain_pty()
        await self._drain_probes()
        if self._ranks_alive():
            await self._outlive_launcher(code)
        # Stored before the end is announced: `tuidebug check` reads the history as soon as
        # meta.json says the run is over (it counted 4 of 60 steps of a fast script before).
        self.store.flush()
        self._finish(code)
        flusher.cancel()
        for task in extension_tasks:
            task.cancel()
        self.store.close()
        # Give consoles a moment to read the final state, then close everything.
        await asyncio.sleep(0.2)
        server.close()
        if self.nodes is not None:
            await self.nodes.close()
        for client in list(self.probes | self.consoles | self.bridges):
            client.close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        self._output_log.close()
        return code

    async def _drain_probes(self) -> None:
        """Wait (a little) for the probes to hang up: a probe sends its last batch as the
        script exits, and the run's end must not be announced before those steps are stored.
        A probe that cannot hang up (a forked worker holding its socket) costs at most the
        timeout."""
        deadline = time.monotonic() + PROBE_DRAIN_TIMEOUT
        while self.probes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _outlive_launcher(self, code: int) -> None:
        """torchrun ended while ranks still run: it was killed (it ends its ranks before it
        exits otherwise), and each rank is in a session of its own, so they train on. They are
        not left orphaned and unseen: the run lasts until their probes hang up, and a stop
        signals them itself (``_stop_escalating``)."""
        ranks = ", ".join(str(r) for r in sorted(self._ranks_alive()))
        how = f"killed by signal {code - 128}" if code > 128 else f"exit code {code}"
        self._say(
            "error",
            f"the launcher (torch.distributed.run) ended ({how}) while ranks {ranks} still run: "
            "the run lasts until they end; stopping the run stops them",
        )
        while self._ranks_alive():
            await asyncio.sleep(0.1)

    def _ranks_alive(self) -> list[int]:
        """The ranks of a job whose process lives. The process tells, not the connection: a
        forked worker may hold a dead rank's, and a rank may hang up and then hang in its
        exit (gloo's teardown waiting for a peer)."""
        return [rank for rank, pid in self._rank_pids.items() if pid_alive(pid)]

    def _finish(self, code: int) -> None:
        self.exit_code = code
        self.ended = time.time()
        if self.stop_requested and code != 0:
            self.state = "stopped"
        elif code == 0 and not self.error_seen:
            self.state = "finished"
        else:
            self.state = "crashed"
        self._write_meta()
        self._broadcast(codec.encode(self._run_info()))

    def request_stop(self) -> None:
        """Stop the script as Ctrl-C would, escalating to SIGTERM and SIGKILL if it lingers."""
        if self.process is None or self.stop_requested or not self._running():
            return
        self.stop_requested = True
        asyncio.get_running_loop().create_task(self._stop_escalating())

    def _running(self) -> bool:
        """The script runs, or (a job whose launcher was killed) some of its ranks do."""
        launcher = self.process is not None and self.process.poll() is None
        return launcher or bool(self._ranks_alive())

    async def _stop_escalating(self) -> None:
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
        for sig, wait in zip(signals, (*STOP_GRACE, 0.0), strict=True):
            if not self._running():
                return
            launcher = self.process.poll() is None
            if launcher:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
            if self.ranks is not None and (sig == signal.SIGKILL or not launcher):
                # torchrun starts each rank in a session of its own: killing torchrun alone
                # would leave them running; without torchrun, nobody else signals them.
                for rank in self._ranks_alive():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self._rank_pids[rank], sig)
            if wait:
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self._running():
                    await asyncio.sleep(0.1)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.store.flush()

    # --- the script's terminal -----------------------------------------------------------------

    def _on_pty_readable(self) -> None:
        try:
            data = os.read(self.master_fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the slave side has gone
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master_fd)
            return
        if self.rank_output is not None:  # a job: this terminal is torchrun's own
            self.rank_output.write(job.LAUNCHER_RANK, data)
            self._on_output(data, job.LAUNCHER_RANK)
            return
        self._output_log.write(data)
        self._output_log.flush()
        self._on_output(data)

    def _on_rank_pty_readable(self, rank: int) -> None:
        master = self.rank_ptys[rank][0]
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(master)
            return
        assert self.rank_output is not None
        self.rank_output.write(rank, data)
        self._on_output(data, rank)

    def _on_output(self, data: bytes, rank: int = 0) -> None:
        """Fan out the script's output, and notice a debugger prompt nobody announced."""
        if self.nodes is not None:
            self.nodes.on_output(data, rank)
        recent = (
            self._recent_output if rank == 0 else self._recent_by_rank.setdefault(rank, bytearray())
        )
        recent += data
        del recent[:-DEBUGGER_CONTEXT_BYTES]
        frame = codec.encode(Output(data=data, rank=rank))
        self._broadcast(frame)
        if self.ranks is None or rank == self.debugger_rank:
            for bridge in list(self.bridges):
                bridge.send(frame)
        if self.debugger_output is not None:
            if self.ranks is None or rank == self.debugger_rank:
                self.debugger_output += data
        elif rank != job.LAUNCHER_RANK and _ends_with_prompt(recent):
            # The script called pdb/ipdb.set_trace() itself: hand the terminal over.
            self.prompt_debugger = True
            self._open_debugger(DebuggerOpened(kind="prompt", rank=rank))

    async def _drain_pty(self) -> None:
        """Read what the script wrote just before it exited (children may hold the pty open)."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data = os.read(self.master_fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.05)
                continue
            except OSError:
                break
            if not data:
                break
            self._output_log.write(data)
            self._on_output(data)
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.master_fd)
        os.close(self.master_fd)
        for rank, (master, slave) in self.rank_ptys.items():
            # The ranks are gone (torchrun waits for them): what they wrote is in the buffer.
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                assert self.rank_output is not None
                self.rank_output.write(rank, data)
                self._on_output(data, rank)
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)
        if self.rank_output is not None:
            self.rank_output.flush()

    # --- clients -------------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is None or not auth.peer_is_owner(sock):
            writer.close()
            return
        decoder = codec.FrameDecoder()
        client: Client | None = None
        try:
            hello = await asyncio.wait_for(self._read_hello(reader, decoder), HANDSHAKE_TIMEOUT)
            if hello is None or not auth.token_matches(self.token, hello.token):
                writer.write(codec.encode(Reject(reason="bad token")))
                await writer.drain()
                return
            client = Client(hello.role, hello.rank, writer, hello.pid)
            writer.write(codec.encode(Welcome(run_id=self.paths.run_id)))
            if hello.role == "probe":
                self._on_probe_hello(client)
            elif hello.role == "bridge":
                if self.debugger_output is not None:
                    client.send(codec.encode(Output(data=bytes(self.debugger_output))))
                self.bridges.add(client)
            else:
                self._send_history(client, with_history=hello.history)
            await self._serve(client, reader, decoder)
        except (asyncio.TimeoutError, codec.ProtocolError, ConnectionError, OSError) as error:
            log.info("closing a connection: %s", error)
        finally:
            if client is not None:
                self._drop_client(client)
            else:
                writer.close()

    def _drop_client(self, client: Client) -> None:
        """Forget a client that hung up (a probe's: its rank's end is recorded)."""
        if client in self.probes:
            if self.ranks is not None:
                self.publish(self.ranks.on_gone(client.rank, self.stop_requested))
            if self.nodes is not None:
                self.nodes.probe_gone(client)
        self.probes.discard(client)
        self.consoles.discard(client)
        self.bridges.discard(client)
        client.close()
        self._pace_links()
        if self.held and not self.consoles:
            self._release()

    async def _read_hello(
        self, reader: asyncio.StreamReader, decoder: codec.FrameDecoder
    ) -> Hello | None:
        while True:
            data = await reader.read(65536)
            if not data:
                return None
            messages = decoder.feed(data)
            if messages:
                first = messages[0]
                return first if isinstance(first, Hello) else None

    def _on_probe_hello(self, client: Client) -> None:
        self.probes.add(client)
        client.send(self._pace_frame())
        if self.ranks is not None:
            if client.pid > 0:
                self._rank_pids[client.rank] = client.pid
            self.ranks.on_hello(client.rank)
        if self.nodes is not None:
            self.nodes.probe_joined(client)
        if self.state == "starting":
            self.state = "running"
            self._write_meta()
            self._broadcast(codec.encode(self._run_info()))

    def _send_history(self, client: Client, with_history: bool = True) -> None:
        """Send a new console everything so far, then add it to the live fan-out.

        There is no ``await`` between reading the store and joining ``consoles``, so no message
        can slip between the history and the live stream. A client that asked for no history
        (``tuidebug stacks``: a long run's history is millions of steps) gets the run's info and
        the live stream only.
        """
        if not with_history:
            client.send(codec.encode(self._run_info()))
            client.send(codec.encode(HistoryDone(steps=0)))
            self.consoles.add(client)
            self._pace_links()
            return
        self.store.flush()
        client.send(codec.encode(self._run_info()))
        for body in self.store.iter_event_bodies():
            client.send(codec.HEADER.pack(len(body)) + body)
        for _, body in sorted(self.latest.items()):
            client.send(codec.HEADER.pack(len(body)) + body)
        steps = 0
        for message in self.store.iter_steps():
            steps += len(message.points)
            client.send(codec.encode(message))
        tail = _file_tail(self.paths.pty_log, OUTPUT_REPLAY_BYTES)
        if tail and self.rank_output is not None:
            for output in job.marked_output(tail):  # each rank's lines as its own output
                client.send(codec.encode(output))
        elif tail:
            client.send(codec.encode(Output(data=tail)))
        client.send(codec.encode(HistoryDone(steps=steps)))
        self.consoles.add(client)
        self._pace_links()

    def _pace_frame(self) -> bytes:
        watched = "1" if self.consoles else "0"
        return codec.encode(Command(name=LINK_PACE, rank=-1, args={"watched": watched}))

    def _pace_links(self) -> None:
        """Tell the probes when the first console came or the last one went: their links send
        20 batches a second to a console, 4 to the store alone (link.py)."""
        watched = bool(self.consoles)
        if watched != self._links_watched:
            self._links_watched = watched
            frame = self._pace_frame()
            for probe in list(self.probes):
                probe.send(frame)

    async def _serve(
        self, client: Client, reader: asyncio.StreamReader, decoder: codec.FrameDecoder
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for message in decoder.feed(data):
                if client.role == "probe":
                    self._on_probe_message(client, message)
                else:
                    self._on_console_message(message)

    def _on_probe_message(self, client: Client, message: Message) -> None:
        message.rank = client.rank  # a probe speaks for its own rank only
        if self.nodes is not None:
            self.nodes.from_probe(message)  # a node other than 0 relays it up (nodes.py)
        self._tell_listeners(message, True)
        if self.ranks is not None and self._on_rank_message(client.rank, message):
            return
        if isinstance(message, Steps):
            message.rank = client.rank  # a probe speaks for its own rank only
            self.store.add_points(client.rank, message.points)
            self.steps_seen += len(message.points)
            if self.prompt_debugger:  # steps again: the script's own debugger is done
                self.prompt_debugger = False
                self._close_debugger(DebuggerClosed(rank=client.rank, continued=True))
        elif isinstance(message, DebuggerOpened):
            message.rank = client.rank
            self._open_debugger(message)
            return
        elif isinstance(message, DebuggerClosed):
            message.rank = client.rank
            self._close_debugger(message)
            return
        elif isinstance(message, (Hello, Command, Input, Resize, Output, RunInfo, HistoryDone)):
            return  # not a probe's to send
        else:
            message.rank = client.rank
            if isinstance(message, ScriptError):
                self.error_seen = True
                if message.held:
                    self.held = True
                    if not self.consoles:
                        self._release()  # nobody to debug it: let the process exit
            self.publish(message)
            return
        if self.consoles:  # nobody watching: the steps are only stored (no encoding)
            self._broadcast(codec.encode(message))

    def _on_rank_message(self, rank: int, message: Message) -> bool:
        """What the coordinator of a job needs to see of a rank's message (ranks.py); True when
        the message is the coordinator's alone (not stored, not shown)."""
        assert self.ranks is not None
        message.rank = rank
        if isinstance(message, Steps):
            if message.points:
                self.ranks.on_step(rank, message.points[-1].step)
        elif isinstance(message, Paused):
            self.ranks.on_paused(rank, message.step)
        elif isinstance(message, Resumed):
            self.ranks.on_resumed(rank)
        elif isinstance(message, PauseAck):
            self.ranks.on_ack(rank, message)
            return True
        elif isinstance(message, CheckpointSaved):
            self.ranks.on_saved(rank, message.ok, message.path)
        elif isinstance(message, CheckpointRestored):
            self.ranks.on_restored(rank, message.ok, message.step)
        elif isinstance(message, PauseRequest):
            self.ranks.on_request(rank, message.reason)
            return True
        elif isinstance(message, RankEnded):
            self.ranks.on_exit(message)  # published, completed, when its probe hangs up
            return True
        elif isinstance(message, ScriptError) and not self.ranks.on_error(message):
            # It raised because another rank went first (its collective lost a peer): that
            # is the job ending, recorded with the rank's end, not an error of its own.
            self.publish(
                job.notice(
                    "info",
                    f"rank {rank} after rank {self.ranks.failed} failed: "
                    f"{message.exc_type}: {message.text}",
                )
            )
            return True
        elif isinstance(message, DebuggerClosed):
            self._close_debugger(message)
            self.ranks.on_debugger_closed(rank, message.continued)
            return True
        return False

    def _send_to_ranks(self, rank: int, command: Command) -> None:
        frame = codec.encode(command)
        for probe in list(self.probes):
            if rank in (-1, probe.rank):
                probe.send(frame)

    def _say(self, level: str, text: str) -> None:
        self.publish(job.notice(level, text))

    # --- for the extensions (SupervisorApi) -----------------------------------------------------

    def listen(self, listener: Callable[[Message, bool], None]) -> None:
        """Call ``listener(message, from_probe)`` with every message a probe sends (its rank
        set) and every message a console sends, before the supervisor acts on it."""
        self._listeners.append(listener)

    def _tell_listeners(self, message: Message, from_probe: bool) -> None:
        for listener in self._listeners:
            try:
                listener(message, from_probe)
            except Exception:  # an extension's bug must not cost a connection
                log.exception("a supervisor extension's listener failed")

    def probe_pids(self) -> dict[int, int]:
        """The connected probes: rank -> pid."""
        return {probe.rank: probe.pid for probe in self.probes}

    def send_to_probes(self, command: Command) -> None:
        """Send ``command`` to the probe of ``command.rank`` (-1: every probe)."""
        frame = codec.encode(command)
        for probe in list(self.probes):
            if command.rank in (-1, probe.rank):
                probe.send(frame)

    def publish(self, message: Message) -> None:
        """Send ``message`` to every console, keeping it for later ones as its kind says."""
        body = event_body(message)
        retention = type(message).retention
        if retention == "all":
            self.store.add_event(body)
        elif retention == "latest":
            self.latest[(type(message).__name__, message.rank)] = body
        self._broadcast(codec.HEADER.pack(len(body)) + body)

    def _open_debugger(self, message: DebuggerOpened) -> None:
        if message.kind != "prompt":
            self.prompt_debugger = False  # the probe announced it: it will say when it closes
        self.debugger_rank = message.rank
        if self.ranks is not None:
            self.ranks.on_debugger_opened(message.rank)
        recent = self._recent_by_rank.get(message.rank) if message.rank else None
        self.debugger_output = bytearray(self._recent_output if recent is None else recent)
        self.store.add_event(event_body(message))
        self._broadcast(codec.encode(message))

    def _close_debugger(self, message: DebuggerClosed) -> None:
        self.debugger_output = None
        if self.ranks is not None:
            self.ranks.debugger_gone(message.rank)
        frame = codec.encode(message)
        self.store.add_event(event_body(message))
        self._broadcast(frame)
        for bridge in list(self.bridges):
            bridge.send(frame)

    def _release(self) -> None:
        """Let a script held after its error exit."""
        self.held = False
        frame = codec.encode(Command(name="release", rank=-1))
        for probe in list(self.probes):
            probe.send(frame)

    def _on_console_message(self, message: Message) -> None:
        self._tell_listeners(message, False)
        if self.nodes is not None and self.nodes.on_console(message):
            return  # relayed to node 0, or to the node a debugger runs on (nodes.py)
        if isinstance(message, Command):
            if message.name == "stop-run":
                self.request_stop()
                if self.held:
                    self._release()
            elif message.name in (LINK_PACE, PAUSE_AT):
                pass  # the supervisor's own, never relayed
            elif self.ranks is not None and not self.held and self.ranks.on_console(message):
                pass  # a job's pause, step, run-to and debug are collective (ranks.py)
            else:
                if message.name in ("release", "debug"):
                    if self.held and self.ranks is not None and self.ranks.failed is not None:
                        message.rank = self.ranks.failed  # the post-mortem is the failed rank's
                    self.held = False
                frame = codec.encode(message)
                for probe in list(self.probes):
                    if message.rank in (-1, probe.rank):
                        probe.send(frame)
        elif isinstance(message, Input) and self.master_fd >= 0:
            # In a job, keystrokes go to the terminal of the rank the debugger runs in.
            target = self.rank_ptys.get(self.debugger_rank, (self.master_fd, -1))[0]
            with contextlib.suppress(OSError):
                os.write(target, message.data)
        elif isinstance(message, Resize) and self.master_fd >= 0:
            for fd in [self.master_fd, *(master for master, _ in self.rank_ptys.values())]:
                with contextlib.suppress(OSError):
                    set_winsize(fd, max(message.cols, 20), max(message.rows, 5))

    def _broadcast(self, frame: bytes) -> None:
        for console in list(self.consoles):
            console.send(frame)
            if console.closed:
                self.consoles.discard(console)
                self._pace_links()

    # --- metadata ------------------------------------------------------------------------------

    def _run_info(self) -> RunInfo:
        return RunInfo(
            run_id=self.paths.run_id,
            script=self.script,
            args=self.args,
            cwd=self.cwd,
            started=self.started,
            state=self.state,  # type: ignore[arg-type]
            pid=self.process.pid if self.process is not None else 0,
            exit_code=self.exit_code,
            ended=self.ended,
            world_size=self.world_size,
        )

    def _prepare_job(self, env: dict[str, str]) -> list[str]:
        """A torchrun job: one pty per local rank (named to the ranks in the environment) and
        torchrun's command line, running the probe's bootstrap in every rank."""
        assert self.launch is not None
        local = int(self.launch.get("nproc_per_node") or 1)
        first = int(self.launch.get("node_rank") or 0) * local  # the global rank of local 0
        pairs = open_rank_ptys(local)
        self.rank_ptys = {first + index: pair for index, pair in enumerate(pairs)}
        env[ENV_RANK_TTYS] = os.pathsep.join(os.ttyname(slave) for _, slave in pairs)
        env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its warning
        return torchrun_command(
            list(self.launch.get("torchrun_args") or []), self.script, self.args
        )

    def _write_meta(self) -> None:
        meta = self.paths.read_meta()
        meta.update(
            state=self.state,
            pid=self.process.pid if self.process is not None else 0,
            supervisor_pid=os.getpid(),
            socket=str(self.paths.socket),
            exit_code=self.exit_code,
            started=self.started,
            ended=self.ended,
        )
        self.paths.write_meta(meta)


def _ends_with_prompt(output: bytearray) -> bool:
    """True when the script's latest output ends with a debugger prompt (colours ignored)."""
    tail = _ANSI.sub("", bytes(output[-256:]).decode(errors="replace"))
    return tail.rstrip().endswith(PROMPTS)


def _file_tail(path: os.PathLike[str], size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            length = handle.tell()
            handle.seek(max(0, length - size))
            return handle.read()
    except OSError:
        return b""
