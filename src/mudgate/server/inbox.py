"""What waits for the app on one WebSocket: a message's frames until its last one, the messages
the app has not taken yet, and the news, once, that the connection is over.

Bounded by its owner (websocket.py): the parser runs only while the app waits for a message
and stops at the first one put here, so the inbox holds one message (and, once, the news that
the connection is over)."""

from __future__ import annotations

import asyncio
from collections import deque

from uvicorn._types import ASGIReceiveEvent
from websockets.frames import Frame, Opcode

__all__ = ["Fragments", "Inbox"]

ABNORMAL_CLOSURE = 1006


class Fragments:
    """The message being received in several frames, joined as they arrive.

    One buffer holds its payload, so a message costs its bytes plus a constant however many
    frames it comes in (one object per fragment cost ~56 bytes for every 2 bytes of payload
    sent as 2-byte fragments). websockets has checked each frame against what is left of
    ``max_message_bytes``; ``frames`` is what the protocol caps (``max_message_fragments``).
    """

    __slots__ = ("frames", "payload", "text")

    def __init__(self, first: Frame) -> None:
        self.text = first.opcode is Opcode.TEXT
        self.payload = bytearray(first.data)
        self.frames = 1

    def add(self, frame: Frame) -> None:
        """Add a continuation frame."""
        self.payload += frame.data
        self.frames += 1


class Inbox:
    __slots__ = ("_closed", "_loop", "_messages", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._messages: deque[ASGIReceiveEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False  # the disconnect was put

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: ASGIReceiveEvent) -> None:
        self._messages.append(message)
        self._wake()

    def close(self, code: int, reason: str) -> None:
        """Tell the app, once, that the connection is over."""
        if not self._closed:
            self._closed = True
            self.put({"type": "websocket.disconnect", "code": code, "reason": reason})

    async def get(self) -> ASGIReceiveEvent:
        while not self._messages:
            if self._closed:
                # Told once already; a receive after that does not hang.
                return {"type": "websocket.disconnect", "code": ABNORMAL_CLOSURE, "reason": ""}
            if self._waiter is None:
                self._waiter = self._loop.create_future()
            await self._waiter
        return self._messages.popleft()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
