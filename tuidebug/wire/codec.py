"""Framing: a 4-byte big-endian length, then one msgpack-encoded message.

``encode`` turns a message into a frame; ``FrameDecoder`` turns a byte stream back into
messages, incrementally, whatever the chunking. Frames of a kind this side does not know are
skipped (a newer peer may send them); anything else that does not decode is a
``ProtocolError``, on which the caller closes that one connection.
"""

from __future__ import annotations

import struct

import msgspec

from tuidebug.wire.messages import Message
from tuidebug.wire.registry import message_types, message_union

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # a larger frame is hostile or broken, never legitimate

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(message_union())
_known = frozenset(cls.__name__ for cls in message_types())
_loose_decoder = msgspec.msgpack.Decoder()


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; close its connection."""


def encode(message: Message) -> bytes:
    """One message as a complete frame, ready for the socket."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> Message | None:
    """Decode one frame body; ``None`` for a well-formed message of an unknown kind."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as error:
        try:
            loose = _loose_decoder.decode(body)
        except msgspec.DecodeError:
            raise ProtocolError(f"undecodable frame: {error}") from None
        kind = loose.get("type") if isinstance(loose, dict) else None
        if isinstance(kind, str) and kind not in _known:
            return None
        raise ProtocolError(f"invalid message: {error}") from None
    except msgspec.DecodeError as error:
        raise ProtocolError(f"undecodable frame: {error}") from None


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get whole messages back."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return the messages completed by them (unknown kinds skipped)."""
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max_frame} limit")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            message = decode_body(body)
            if message is not None:
                messages.append(message)
        return messages

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)
