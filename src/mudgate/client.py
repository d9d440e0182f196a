"""An asyncio client for a mudgate server: a bot, a load test, a game's own tests.

    async with Client("ws://127.0.0.1:54731/ws", token=token) as client:
        await client.send({"op": "say", "text": "hello"})
        async for message in client:
            print(message)

It keeps its player connected until told otherwise, and what it does when a connection ends
depends on how (``CloseCode`` says what each code asks of a client):

- a restart (1012) or a recycle (4010): it reconnects after a random delay, uniform within the
  server's window (the close reason's "reconnect within N s", else the last welcome's
  ``reconnect_window``, else 5 s), so that a restart's players do not all come back in the
  same instant; ``restart_jitter=False`` reconnects at once;
- a refusal (4001, or a handshake answered 401): at once, with a new token from
  ``token_factory`` (a factory that raises is asked again after a backoff); without a
  factory the session ends;
- a normal close (1000), a policy violation (1008), an operator's disconnect (4003) or being
  replaced (4009): it does not reconnect; iteration ends, and ``recv`` raises ``Closed``;
- anything else, a dropped connection (1006) included, and every failed reconnect attempt
  (refused, reset in the handshake, a 5xx or another bad answer, a name that does not resolve,
  the ``open_timeout``): it tries again with jittered exponential backoff (``initial_backoff``
  doubling up to ``max_backoff``, each times 0.8 to 1.2; at least as long as the code asks),
  for as long as it takes.

Only the first connection's failure is an error: ``connect()`` (and ``async with``) raises it
(``ConnectionRefusedError``, ``InvalidStatus``...) when the server is not there at all. A
failure the client does not expect ends the session too (logged; ``recv`` raises ``Closed``).

Nothing said in its room or channels is lost or seen twice across a reconnect, as long as the
server's history still holds it (docs/protocol.md): the client keeps each topic's position (the
offset and epoch of the last event it got there, ``positions``), drops an event it already got,
and on each reconnect says where it was (``resume=``, its room and channels). The server
replays what was missed, then sends a ``resumed`` event for each topic, ``recovered: false``
when some was lost for good (counted in ``lost``: a game shows it). What the server sends
waits in a bounded queue: a client that stops reading stops reading the socket too, and the
server's outbox decides (4008).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from random import Random
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .protocol import MAX_RESUME_BYTES, CloseCode, Position

__all__ = ["Client", "Closed", "Resume"]

logger = logging.getLogger("mudgate.client")

NO_RECONNECT = frozenset(
    {CloseCode.NORMAL, CloseCode.POLICY_VIOLATION, CloseCode.DISCONNECTED, CloseCode.REPLACED}
)
# Reconnect after a random delay within the server's reconnect window.
SPREAD = frozenset({CloseCode.RECYCLED, CloseCode.SERVICE_RESTART})
DEFAULT_RECONNECT_WINDOW_SECONDS = 5.0
_WINDOW_IN_REASON = re.compile(r"reconnect within ([0-9.]+) s")
# The least a close code asks the client to wait, seconds.
BACKOFF_FLOOR = {
    CloseCode.GOING_AWAY: 1.0,
    CloseCode.SLOW_CONSUMER: 1.0,
    CloseCode.TRY_AGAIN_LATER: 2.0,
    CloseCode.RATE_LIMITED: 60.0,
}
# How an attempt to connect fails when the next one may not: refused, reset or a name that
# does not resolve (OSError), the open timeout, the connection ending in the handshake (EOF,
# InvalidMessage, ConnectionClosed), an answer that is not a WebSocket's (InvalidStatus: a
# 5xx from a proxy, say; InvalidHeader...).
ATTEMPT_FAILURES = (OSError, TimeoutError, EOFError, InvalidHandshake, ConnectionClosed)
TokenFactory = Callable[[], "str | Awaitable[str]"]


class Closed(Exception):
    """The server ended the session for good (``code``), or the client was closed."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed ({code}): {reason}" if reason else f"closed ({code})")
        self.code = code
        self.reason = reason


def _close_code(code: int | None) -> CloseCode | None:
    """The close code as mudgate's enum; None for one mudgate does not send (1006, say)."""
    try:
        return None if code is None else CloseCode(code)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Ending:
    """How one connection (or an attempt at one) ended."""

    code: CloseCode | None
    reason: str = ""
    opened: bool = False


class Resume:
    """Where a client is, read from what the server sends it: each room's and channel's
    position (the offset and epoch of the last event it got there), its room and its channels;
    and the resume string that tells a server so when the client reconnects."""

    __slots__ = ("_channels", "_player", "_positions", "lost", "room")

    def __init__(self) -> None:
        self._positions: dict[str, tuple[int, str]] = {}
        self._player: str | None = None
        self._channels: dict[str, None] = {}  # a set that keeps the order they were joined
        self.room: str | None = None
        self.lost = 0  # resumed events that said some events were lost for good

    @property
    def positions(self) -> Mapping[str, tuple[int, str]]:
        """Topic ("room:hall", "channel:ooc") -> (offset, epoch) of the last event got there."""
        return MappingProxyType(self._positions)

    def observe(self, message: Mapping[str, Any]) -> bool:
        """Take note of ``message``; False if it is a room's or channel's event the client
        already got (same epoch, an offset no later than the last one): drop it."""
        if message.get("type") == "error":
            self._refused(message)
            return True
        if message.get("type") != "event":
            return True
        name = message.get("event")
        if name == "welcome":
            self._welcome(message)
        elif name == "resumed":
            self._resumed(message)
        elif name == "subscribed" and isinstance(message.get("channel"), str):
            self._channels[message["channel"]] = None
            self._adopt(f"channel:{message['channel']}", message.get("position"))
        elif name == "unsubscribed" and isinstance(message.get("channel"), str):
            self._channels.pop(message["channel"], None)
            self._positions.pop(f"channel:{message['channel']}", None)
        else:
            return self._placed(name, message)
        return True

    def _welcome(self, message: Mapping[str, Any]) -> None:
        self._player = message.get("player")
        room = message.get("room")
        if isinstance(room, str):
            # The room asked to be resumed keeps its position: the server may put the
            # player back there after this welcome.
            self._forget_rooms_but(room, self.room)
            self.room = room
            self._adopt(f"room:{room}", message.get("position"))

    def _adopt(self, topic: str, position: object) -> None:
        """Where ``topic``, not heard from yet, is now (the welcome's room, a channel just
        subscribed): what the client resumes from if it reconnects before hearing anything."""
        if topic in self._positions or not isinstance(position, Mapping):
            return
        offset, epoch = position.get("offset"), position.get("epoch")
        if isinstance(offset, int) and not isinstance(offset, bool) and isinstance(epoch, str):
            self._positions[topic] = (offset, epoch)

    def _refused(self, message: Mapping[str, Any]) -> None:
        """A topic the server will not resume (``forbidden_topic``) is not named again."""
        topic = message.get("topic")
        if message.get("code") != "forbidden_topic" or not isinstance(topic, str):
            return
        self._positions.pop(topic, None)
        if topic.startswith("channel:"):
            self._channels.pop(topic[len("channel:") :], None)

    def _resumed(self, message: Mapping[str, Any]) -> None:
        topic, offset, epoch = _position(message)
        if topic is not None and offset is not None and epoch is not None:
            self._positions[topic] = (offset, epoch)
        if message.get("recovered") is False:
            self.lost += 1

    def _placed(self, name: object, message: Mapping[str, Any]) -> bool:
        topic, offset, epoch = _position(message)
        if topic is None or offset is None or epoch is None:
            return True  # not a room's or channel's event, or the server keeps no history
        kept = self._positions.get(topic)
        if kept is not None and kept[1] == epoch and offset <= kept[0]:
            return False
        self._positions[topic] = (offset, epoch)
        if topic.startswith("channel:"):
            self._channels[message["channel"]] = None
        elif name == "arrive" and message.get("player") == self._player:
            self.room = message["room"]
            self._forget_rooms_but(self.room)
        return True

    def _forget_rooms_but(self, *rooms: str | None) -> None:
        kept = {f"room:{room}" for room in rooms if room is not None}
        for topic in [t for t in self._positions if t.startswith("room:") and t not in kept]:
            del self._positions[topic]

    def __str__(self) -> str:
        """``room:hall:41:9f86d081,channel:ooc:7:0c1d2e3f``: the room, then the channels
        (offset 0 and no epoch for a topic nothing was got from yet), the last channels left
        out past MAX_RESUME_BYTES."""
        topics = [f"channel:{channel}" for channel in self._channels]
        if self.room is not None:
            topics.insert(0, f"room:{self.room}")
        text = ""
        for topic in topics:
            entry = str(Position(topic, *self._positions.get(topic, (0, ""))))
            longer = f"{text},{entry}" if text else entry
            if len(longer) > MAX_RESUME_BYTES:  # names are ASCII: a character is a byte
                logger.warning("resuming without %s: the resume string is full", topic)
                break
            text = longer
        return text


def _position(message: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    """A room's or channel's event's topic, offset and epoch (None for what it lacks)."""
    if isinstance(message.get("room"), str):
        topic: str | None = f"room:{message['room']}"
    elif isinstance(message.get("channel"), str):
        topic = f"channel:{message['channel']}"
    else:
        topic = None
    offset, epoch = message.get("offset"), message.get("epoch")
    return (
        topic,
        offset if isinstance(offset, int) and not isinstance(offset, bool) else None,
        epoch if isinstance(epoch, str) else None,
    )


class Client:
    """One player's connection to ``url`` (``ws://host:port/ws``), kept open until closed.

    ``token`` (or ``token_factory``, called for a new one whenever a token is refused) signs
    the player in. Seconds: ``initial_backoff`` and ``max_backoff`` bound the wait between
    failed attempts (0.5, doubling up to 30), ``open_timeout`` the wait for a handshake (10).
    ``restart_jitter`` spreads a reconnect after 1012 or 4010 over the server's window (True)
    rather than reconnecting at once. ``queue_size`` messages wait for ``recv`` (1000).
    ``random`` draws the delays (a seeded one in a test).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_factory: TokenFactory | None = None,
        reconnect: bool = True,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        open_timeout: float = 10.0,
        restart_jitter: bool = True,
        queue_size: int = 1000,
        random: Random | None = None,
    ) -> None:
        if token is None and token_factory is None:
            raise ValueError("give a token or a token_factory")
        self.url = url
        self.token = token
        self._token_factory = token_factory
        self.reconnect = reconnect
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.restart_jitter = restart_jitter
        self._random = random or Random()
        self._inbox: asyncio.Queue[dict[str, Any] | Closed] = asyncio.Queue(queue_size)
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._closed: Closed | None = None
        self._failure: Exception | None = None
        self._connected_once = False
        self._resume = Resume()
        self._reconnect_window: float | None = None  # seconds, from the last welcome
        self.reconnects = 0

    @property
    def positions(self) -> Mapping[str, tuple[int, str]]:
        """Where the client is in each room and channel: topic ("room:hall",
        "channel:ooc") -> (offset, epoch) of the last event it got there (read-only)."""
        return self._resume.positions

    @property
    def lost(self) -> int:
        """How many times a reconnect could not get back everything missed (a ``resumed``
        event with ``recovered: false``): some room or channel events are gone for good."""
        return self._resume.lost

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (and keep it open); returns once the first one is open.
        Raises what the first attempt met (``OSError``, ``InvalidStatus``...) when the server
        is not there at all, or ``Closed`` when it refused the session."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        opened = asyncio.ensure_future(self._connected.wait())
        await asyncio.wait((opened, self._runner), return_when=asyncio.FIRST_COMPLETED)
        if not opened.done():
            opened.cancel()
            if self._failure is not None:
                raise self._failure
            raise self._closed or Closed(None, "could not connect")

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame, waiting for the connection if it is being re-established."""
        while True:
            if self._closed is not None:
                raise self._closed
            ws = self._ws
            if ws is None:
                await self._connected_or_ended()
                continue
            try:
                await ws.send(json.dumps(frame))
                return
            except ConnectionClosed:
                await asyncio.sleep(0)  # the runner notices and reconnects

    async def recv(self) -> dict[str, Any]:
        """The next event or error from the server; raises Closed once the session is over."""
        item = await self._inbox.get()
        if isinstance(item, Closed):
            self._inbox.put_nowait(item)  # every later recv says so too
            raise item
        return item

    async def next(self, *events: str, within: float | None = None) -> dict[str, Any]:
        """The next event named one of ``events`` (or an error), skipping the rest; TimeoutError
        if none comes ``within`` seconds (None: wait as long as it takes)."""
        async with asyncio.timeout(within):
            while True:
                message = await self.recv()
                name = message.get("event") if message.get("type") == "event" else "error"
                if name in events or name == "error":
                    return message

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv()
            except Closed:
                return

    async def close(self) -> None:
        """End the session (code 1000); pending ``recv`` calls raise Closed."""
        self._finish(Closed(CloseCode.NORMAL, "closed by the client"))
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait((self._runner,))

    # The connection's life

    async def _run(self) -> None:
        try:
            await self._keep_connected()
        except Exception as error:
            # A bug, or the first attempt's failure (which connect() raises): either way the
            # session is over, and recv says so rather than waiting for ever.
            if self._connected_once:
                logger.exception("the client of %s failed", self.url)
            self._failure = error
            closed = Closed(None, f"the client failed: {error!r}")
            closed.__cause__ = error
            self._finish(closed)

    async def _keep_connected(self) -> None:
        attempt = 0
        while self._closed is None:
            ending = await self._session()
            if ending.opened:
                attempt = 0  # the backoff starts over after a connection that worked
            if self._closed is not None:
                return
            code = ending.code
            if not self.reconnect or code in NO_RECONNECT:
                self._finish(Closed(code, code.reason if code is not None else ""))
                return
            if code is CloseCode.UNAUTHORIZED:
                if self._token_factory is None:
                    self._finish(Closed(code, "the token was refused and there is no factory"))
                    return
                self.token = None
            self.reconnects += 1
            await asyncio.sleep(self._delay(ending, attempt))
            attempt += 1

    async def _session(self) -> _Ending:
        """One connection, from the handshake to its close, or one attempt at it."""
        opened = False
        try:
            if self.token is None:
                try:
                    self.token = await self._new_token()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the factory's own trouble: try again later
                    if not self._connected_once:
                        raise
                    logger.warning("getting a new token failed: %r", error)
                    return _Ending(None)
            async with connect(self._url(self.token), open_timeout=self.open_timeout) as ws:
                self._ws, self._connected_once, opened = ws, True, True
                self._connected.set()
                try:
                    async for raw in ws:
                        message = json.loads(raw)
                        if self._resume.observe(message):
                            if message.get("event") == "welcome":
                                self._welcomed(message)
                            await self._inbox.put(message)
                except ConnectionClosed:
                    pass  # how it ended is in close_code
            return _Ending(_close_code(ws.close_code), ws.close_reason or "", opened=True)
        except ATTEMPT_FAILURES as error:
            if isinstance(error, InvalidStatus) and error.response.status_code == 401:
                return _Ending(CloseCode.UNAUTHORIZED)
            if not self._connected_once:
                raise  # the server is not there at all: connect() says so
            logger.info("connecting to %s failed: %r", self.url, error)
            return _Ending(None, opened=opened)
        finally:
            self._ws = None
            self._connected.clear()

    def _welcomed(self, welcome: Mapping[str, Any]) -> None:
        window = welcome.get("reconnect_window")
        if isinstance(window, int | float) and not isinstance(window, bool) and window >= 0:
            self._reconnect_window = float(window)

    def _delay(self, ending: _Ending, attempt: int) -> float:
        """Seconds to wait before the next attempt."""
        code = ending.code
        if code in SPREAD:
            if not self.restart_jitter:
                return 0.0
            return self._random.uniform(0.0, self._window(ending.reason))
        if code is CloseCode.UNAUTHORIZED:
            return 0.0
        backoff = min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt, 16))
        floor = BACKOFF_FLOOR.get(code, 0.0) if code is not None else 0.0
        return max(floor, backoff) * self._random.uniform(0.8, 1.2)

    def _window(self, reason: str) -> float:
        """The seconds a restart's reconnects spread over: what the close reason says, else
        what the last welcome said, else the default."""
        match = _WINDOW_IN_REASON.search(reason)
        if match is not None:
            try:
                return float(match.group(1))
            except ValueError:  # "1.2.3": not a number after all
                pass
        if self._reconnect_window is not None:
            return self._reconnect_window
        return DEFAULT_RECONNECT_WINDOW_SECONDS

    async def _new_token(self) -> str:
        assert self._token_factory is not None
        token = self._token_factory()
        if inspect.isawaitable(token):
            token = await token
        return token

    def _url(self, token: str) -> str:
        """The URL with the token, and on a reconnect where the client was (``resume``)."""
        scheme, netloc, path, query, fragment = urlsplit(self.url)
        params = {"token": token}
        resume = str(self._resume) if self._connected_once else ""
        if resume:
            params["resume"] = resume
        query = "&".join(filter(None, [query, urlencode(params)]))
        return urlunsplit((scheme, netloc, path, query, fragment))

    def _finish(self, closed: Closed) -> None:
        if self._closed is None:
            self._closed = closed
            self._ended.set()
            try:
                self._inbox.put_nowait(closed)
            except asyncio.QueueFull:  # a reader is behind: make room for the last word
                self._inbox.get_nowait()
                self._inbox.put_nowait(closed)

    async def _connected_or_ended(self) -> None:
        connected = asyncio.ensure_future(self._connected.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait((connected, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            ended.cancel()
