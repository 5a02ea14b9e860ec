"""Frames on a TLS stream: a 4-byte big-endian length, then that many bytes.

A length of 0 or over the limit (the engine's ``MAX_MESSAGE_SIZE``: no valid frame is longer)
is garbage; the reader raises ``BadFrame`` and the caller drops the connection.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final

from fibers._wire import MAX_MESSAGE_SIZE

__all__ = ["MAX_FRAME", "BadFrame", "encode_frame", "read_frame"]

MAX_FRAME: Final = MAX_MESSAGE_SIZE
_HEADER: Final = struct.Struct(">I")


class BadFrame(Exception):
    """The peer sent bytes that are not a frame (a bad length). Disconnect it."""


def encode_frame(frame: bytes) -> bytes:
    """``frame`` with its length prefix. Raises ``ValueError`` for an empty or oversized
    frame (the engine never makes one)."""
    if not 0 < len(frame) <= MAX_FRAME:
        raise ValueError(f"a frame must hold 1 to {MAX_FRAME} bytes, got {len(frame)}")
    return _HEADER.pack(len(frame)) + frame


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> bytes | None:
    """The next frame, or None at a clean end of stream (between frames). Raises ``BadFrame``
    for a bad length and ``asyncio.IncompleteReadError`` for a stream cut inside a frame."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = _HEADER.unpack(header)
    if not 0 < length <= limit:
        raise BadFrame(f"frame length {length} is outside 1..{limit}")
    return await reader.readexactly(length)
