"""The collective pause's protocol, step by step: the supervisor's RankCoordinator and the
ranks' gates, answering each other in the order a test chooses (the real classes; the list of
commands stands in for the socket only). The races the real jobs in test_torchrun.py rarely
hit (a rank already past the target, a rank joining late) are played out here on purpose.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tuidebug.probe.gate import Gate
from tuidebug.supervisor.ranks import MARGIN, RankCoordinator, RankOutput, marked_output
from tuidebug.wire.messages import (
    PAUSE_AT,
    Command,
    Message,
    Output,
    PauseAck,
    Paused,
    PauseRequest,
    RankEnded,
    ScriptError,
    StepPoint,
)


class Job:
    """A coordinator and what it sent, by rank (-1: every rank), and what it said."""

    def __init__(self, ranks: int) -> None:
        self.sent: list[tuple[int, Command]] = []
        self.said: list[tuple[str, str]] = []
        self.coordinator = RankCoordinator(
            lambda rank, command: self.sent.append((rank, command)),
            lambda level, text: self.said.append((level, text)),
        )
        for rank in range(ranks):
            self.coordinator.on_hello(rank)

    def last(self) -> Command:
        return self.sent[-1][1]

    def ack(self, rank: int, step: int, accepted: bool) -> None:
        command = self.last()
        target, seq = int(command.args["step"]), int(command.args["seq"])
        self.coordinator.on_ack(
            rank, PauseAck(rank=rank, step=step, target=target, seq=seq, accepted=accepted)
        )


def test_pause_aims_ahead_of_the_fastest_rank_and_again_when_one_is_late() -> None:
    job = Job(3)
    for rank, step in ((0, 10), (1, 12), (2, 11)):
        job.coordinator.on_step(rank, step)
    assert job.coordinator.on_console(Command(name="pause", rank=-1))
    first = job.last()
    assert first.name == PAUSE_AT and first.args["step"] == str(12 + MARGIN)
    job.ack(0, 11, True)
    job.ack(1, 17, False)  # rank 1 ran past 14 before the command reached it
    assert job.last() is first  # not everyone has answered: nothing new yet
    job.ack(2, 12, True)
    second = job.last()
    assert second.args["step"] == str(17 + MARGIN) and second.args["seq"] != first.args["seq"]
    job.coordinator.on_ack(  # a late answer to the first target changes nothing
        0, PauseAck(rank=0, step=13, target=14, seq=int(first.args["seq"]), accepted=False)
    )
    assert job.last() is second
    for rank in range(3):
        job.ack(rank, 15, True)
    assert job.last() is second
    for rank in range(3):
        job.coordinator.on_paused(rank, 19)
    assert job.said[-1] == ("info", "all 3 ranks paused at step 19")


def test_step_resume_run_to_and_debug_are_collective() -> None:
    job = Job(2)
    for rank in (0, 1):
        job.coordinator.on_step(rank, 30)
        job.coordinator.on_paused(rank, 30)
    job.coordinator.on_console(Command(name="step", rank=-1))
    assert (job.sent[-1][0], job.last().name, job.last().args["step"]) == (-1, PAUSE_AT, "31")
    sent = len(job.sent)
    job.coordinator.on_console(Command(name="pause", rank=-1))  # already paused: nothing to do
    assert len(job.sent) == sent  # (a pause that crossed the job's own must not resume it)
    job.coordinator.on_console(Command(name="resume", rank=-1))  # the console's p when paused
    assert job.sent[-1] == (-1, Command(name="resume", rank=-1))
    for rank in (0, 1):
        job.coordinator.on_resumed(rank)
    job.coordinator.on_console(Command(name="run-to", rank=-1, args={"step": "20"}))
    assert job.said[-1][0] == "warning"  # already past step 20: refused
    job.coordinator.on_console(Command(name="run-to", rank=-1, args={"step": "90"}))
    assert job.last().args["step"] == "90"
    job.coordinator.on_console(Command(name="debug", rank=-1))
    assert job.sent[-1][0] == 0 and job.last().name == "debug"  # rank 0 by default
    job.coordinator.on_console(Command(name="debug", rank=1))
    assert job.sent[-1][0] == 1
    job.coordinator.on_debugger_closed(1, continued=True)
    assert job.last().name == "resume" and job.sent[-1][0] == -1
    assert not job.coordinator.on_console(Command(name="break-on", rank=-1))  # to every rank


def test_a_rank_that_joins_late_gets_the_target_and_a_request_pauses_all_once() -> None:
    job = Job(1)
    job.coordinator.on_step(0, 5)
    job.coordinator.on_request(0, "loss > 5 at step 5")
    target = job.last()
    assert target.args["reason"] == "rank 0: loss > 5 at step 5"
    job.coordinator.on_request(0, "loss > 5 at step 6")  # already pausing: not again
    assert job.last() is target
    job.coordinator.on_hello(1)
    assert job.sent[-1] == (1, target)


def test_each_ranks_end_and_the_fate_of_the_others() -> None:
    job = Job(3)
    job.coordinator.on_step(1, 8)
    error = ScriptError(rank=1, exc_type="RuntimeError", text="x", traceback="")
    assert job.coordinator.on_error(error)
    fallout = ScriptError(rank=0, exc_type="RuntimeError", text="peer", traceback="")
    assert not job.coordinator.on_error(fallout)  # its collective lost rank 1
    job.coordinator.on_exit(RankEnded(rank=1, exit_code=1))
    job.coordinator.on_exit(RankEnded(rank=0, exit_code=1))
    ended = {r: job.coordinator.on_gone(r, stop_requested=False) for r in (1, 0, 2)}
    assert (ended[1].how, ended[1].exit_code, ended[1].step) == ("crashed", 1, 8)
    assert ended[0].how == ended[2].how == "torn-down"
    assert ended[2].text == "stopped by torchrun after rank 1 failed"
    clean = Job(1)
    clean.coordinator.on_exit(RankEnded(rank=0, exit_code=0))
    assert clean.coordinator.on_gone(0, stop_requested=False).how == "finished"
    assert Job(1).coordinator.on_gone(0, stop_requested=True).how == "stopped"
    assert Job(1).coordinator.on_gone(0, stop_requested=False).how == "died"


class Rank:
    """A real gate on a training-like loop in a thread, boundary after boundary."""

    def __init__(self) -> None:
        self.step = 0
        self.sent: list[Message] = []
        self.gate = Gate(self)
        self.gate.collective = True
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._train, daemon=True)

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def _train(self) -> None:
        while not self.stop.is_set():
            self.step += 1
            if self.gate.attention:
                self.gate.at_boundary(StepPoint(self.step, 0.0, 1.0, {}))
            time.sleep(0.001)

    def of(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.sent if isinstance(m, kind)]


def test_a_gate_pauses_exactly_at_the_target_or_says_it_is_past_it() -> None:
    rank = Rank()
    rank.thread.start()
    try:
        time.sleep(0.05)
        ahead = rank.step + 30
        rank.gate.post(Command(name=PAUSE_AT, args={"step": str(ahead), "seq": "1"}))
        (ack,) = rank.of(PauseAck)
        assert isinstance(ack, PauseAck) and ack.accepted and ack.step < ahead
        deadline = time.monotonic() + 10
        while not rank.gate.paused and time.monotonic() < deadline:
            time.sleep(0.005)
        assert rank.gate.paused and rank.step == ahead
        paused = rank.of(Paused)[-1]
        assert isinstance(paused, Paused) and paused.step == ahead
        rank.gate.post(Command(name=PAUSE_AT, args={"step": "3", "seq": "2"}))  # behind it
        late = rank.of(PauseAck)[-1]
        assert isinstance(late, PauseAck) and not late.accepted and late.step == ahead
        time.sleep(0.2)
        assert rank.step == ahead  # still held
        rank.gate.post(Command(name=PAUSE_AT, args={"step": str(ahead + 1), "seq": "3"}))
        while rank.step != ahead + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)
        assert rank.gate.paused and rank.step == ahead + 1  # n: exactly one more
        rank.gate.add_condition("step > 0")  # holds on every step; in a job: a request
        rank.gate.post(Command(name="resume"))
        while not rank.of(PauseRequest) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert rank.of(PauseRequest), "no pause request from the condition"
        time.sleep(0.1)
        assert not rank.gate.paused  # the rank asked; it did not stop by itself
    finally:
        rank.stop.set()
        rank.thread.join(5)


def test_the_log_marks_every_line_with_its_rank_and_reads_back_per_rank(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    with open(path, "wb") as log:
        output = RankOutput(log)
        output.write(0, b"epoch 1 ")
        output.write(1, b"rank one\nhalf")
        output.write(0, b"done\n")
        output.write(-1, b"launcher line\n")
        output.flush()
    text = path.read_bytes()
    assert text == (
        b"[rank 1] rank one\n[rank 0] epoch 1 done\n[torchrun] launcher line\n[rank 1] half\n"
    )
    assert marked_output(text) == [
        Output(rank=1, data=b"rank one\n"),
        Output(rank=0, data=b"epoch 1 done\n"),
        Output(rank=-1, data=b"launcher line\n"),
        Output(rank=1, data=b"half\n"),
    ]
    assert marked_output(b"ne\n" + text)[0] == Output(rank=1, data=b"rank one\n")


def test_while_a_rank_is_in_the_debugger_the_others_are_not_released() -> None:
    """p, n, r, s, restore and another d wait for the debugged rank: released, the others
    would run into their next collective and hang there. c in ipdb resumes every rank."""
    job = Job(2)
    for rank in (0, 1):
        job.coordinator.on_paused(rank, 30)
    job.coordinator.on_console(Command(name="debug", rank=1))
    job.coordinator.on_debugger_opened(1)
    sent = len(job.sent)
    for name, args in (
        ("resume", {}),
        ("step", {}),
        ("run-to", {"step": "40"}),
        ("ckpt-save", {}),
        ("ckpt-restore", {"path": "x.pt"}),
        ("debug", {}),
    ):
        assert job.coordinator.on_console(Command(name=name, rank=-1, args=args))
        assert job.said[-1][0] == "warning" and "rank 1 is in the debugger" in job.said[-1][1]
    assert len(job.sent) == sent  # nothing reached a rank
    assert not job.coordinator.on_console(Command(name="break-on", rank=-1))  # harmless: sent
    job.coordinator.on_debugger_closed(1, continued=True)
    assert job.sent[-1] == (-1, Command(name="resume", rank=-1))
    for rank in (0, 1):
        job.coordinator.on_resumed(rank)
    job.coordinator.on_console(Command(name="step", rank=-1))  # no debugger: a pause now
    assert job.last().name == PAUSE_AT


def test_a_debugged_rank_that_ends_frees_the_others() -> None:
    job = Job(2)
    job.coordinator.on_debugger_opened(0)
    job.coordinator.on_gone(0, stop_requested=False)
    assert job.coordinator.debugging is None
    job.coordinator.on_console(Command(name="resume", rank=-1))
    assert job.sent[-1] == (-1, Command(name="resume", rank=-1))
