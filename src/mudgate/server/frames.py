"""A WebSocket's fast path beside ASGI, for mudgate's own app (websocket.py offers it in the
scope's extensions; web/realtime.py writes through it)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["FRAMES_EXTENSION", "FrameSink", "FrameWriter"]

# The scope extension through which mudgate's app writes prebuilt frames.
FRAMES_EXTENSION = "mudgate.frames"


class FrameSink(Protocol):
    """What a WebSocket connection offers its FrameWriter."""

    def write_frame(self, frame: bytes) -> bool: ...
    async def writable(self) -> None: ...


class FrameWriter:
    """A WebSocket's fast path beside ASGI, for mudgate's own app:
    ``scope["extensions"]["mudgate.frames"]["writer"]``.

    ``write`` puts a frame the caller built (the same bytes for every recipient of a
    broadcast) on the transport at once: no task, no ASGI message, no framing per recipient.
    It refuses (False) unless the connection is open with no extension negotiated and its
    transport is below the high-water mark; the caller then queues, awaits ``writable`` and
    tries again, so a client that does not read still holds at most one write buffer.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FrameSink) -> None:
        self._protocol: FrameSink | None = protocol

    def write(self, frame: bytes) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.write_frame(frame)

    async def writable(self) -> None:
        """Wait until the transport is below its high-water mark (or gone)."""
        protocol = self._protocol
        if protocol is not None:
            await protocol.writable()

    def detach(self) -> None:
        self._protocol = None
