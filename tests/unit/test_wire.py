"""The wire codec: round trips, arbitrary chunking, unknown kinds skipped, garbage refused."""

from __future__ import annotations

import contextlib
import random
import struct

import msgspec
import pytest

from tuidebug.wire import codec
from tuidebug.wire.gpu_messages import MemorySite, MemorySnapshotResult, MemorySnapshotStarted
from tuidebug.wire.loop_messages import LoopEvent
from tuidebug.wire.messages import (
    PROTOCOL,
    Command,
    Hello,
    Output,
    RunInfo,
    ScriptError,
    StepPoint,
    Steps,
)

SAMPLES = [
    Hello(role="probe", token="t" * 64, pid=12, rank=3, world_size=4),
    MemorySnapshotStarted(rank=1, step=9, steps=3),
    MemorySnapshotResult(rank=1, step=12, first=10, sites=[MemorySite("t.py:3 in f", 1, 2, 3, 4)]),
    Steps(
        rank=1, step=7, points=[StepPoint(6, 1.5, 0.25, {}), StepPoint(7, 1.6, None, {"lr": 0.1})]
    ),
    Output(data=b"\r\x1b[32mstep 1\x1b[0m\n\xff"),
    RunInfo(
        run_id="r", script="x.py", args=["--steps", "5"], cwd="/", started=1.0, state="running"
    ),
    ScriptError(rank=0, step=5, exc_type="ValueError", text="boom", traceback="Traceback..."),
    Command(name="stop-run", rank=-1),
    LoopEvent(step=50, kind="validation", epoch=1, metrics={"val_loss": 0.5}, framework="x"),
]


def test_every_sample_round_trips_through_one_stream() -> None:
    stream = b"".join(codec.encode(m) for m in SAMPLES)
    assert codec.FrameDecoder().feed(stream) == SAMPLES


@pytest.mark.parametrize("seed", range(5))
def test_decoding_does_not_depend_on_how_the_stream_is_cut(seed: int) -> None:
    stream = b"".join(codec.encode(m) for m in SAMPLES)
    rng = random.Random(seed)
    decoder, got, at = codec.FrameDecoder(), [], 0
    while at < len(stream):
        size = rng.randint(1, 9)
        got += decoder.feed(stream[at : at + size])
        at += size
    assert got == SAMPLES and decoder.pending == 0


def test_every_message_carries_rank_and_step() -> None:
    for message in SAMPLES:
        assert isinstance(message.rank, int) and isinstance(message.step, int)
    assert Hello(role="console", token="x").protocol == PROTOCOL


def test_a_message_kind_from_a_newer_peer_is_skipped() -> None:
    body = msgspec.msgpack.encode({"type": "FromTheFuture", "rank": 0, "step": 3, "x": [1, 2]})
    stream = codec.HEADER.pack(len(body)) + body + codec.encode(SAMPLES[0])
    assert codec.FrameDecoder().feed(stream) == [SAMPLES[0]]


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1\xc1\xc1",  # not msgpack
        msgspec.msgpack.encode([1, 2, 3]),  # not a message
        msgspec.msgpack.encode({"type": "Steps", "points": "nope"}),  # a known kind, wrong shape
        msgspec.msgpack.encode({"no": "type"}),
    ],
)
def test_malformed_frames_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(codec.ProtocolError):
        codec.FrameDecoder().feed(codec.HEADER.pack(len(body)) + body)


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(codec.ProtocolError, match="exceeds"):
        codec.FrameDecoder().feed(struct.pack(">I", codec.MAX_FRAME + 1) + b"x")


def test_random_garbage_never_raises_anything_but_protocol_error() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        with contextlib.suppress(codec.ProtocolError):
            codec.FrameDecoder(max_frame=1 << 16).feed(struct.pack(">I", len(data)) + data)
