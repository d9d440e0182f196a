"""The gateway's end of the game link: the game in a process of its own (docs/game-link.md).

The gateway holds the players; the game comes and goes. ``GameLink`` listens on a Unix socket
(or loopback) for a game that presents the link's secret, hands it every player on ``hello``
(the sync), forwards the commands the game answers and the players' comings and goings, and
applies what the game sends back (events, moves, per-player state) through the hub.

While no game is ready (it is restarting, or starting after a crash), what is bound for it
waits in one queue, in order, bounded per player, in bytes and in time; past any bound a
command is answered ``game_unavailable`` with ``retry_after``, never left unanswered. When a new
game attaches while one runs (SIGHUP, ``--reload``), new input waits for it, the old one
finishes what it was running, then the new one takes over and the queue drains into it: no
player is disconnected and every command gets exactly one answer.

What the gateway writes to a game is bounded too: a game that stops reading is a slow
consumer, and its link is closed (and its process replaced) past ``game_link_buffer_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed

from ..commands import BUILTIN_OPS, CommandRegistry, answer_error
from ..connection import Connection, ConnectionState
from ..hub import Hub, Player
from ..protocol import CommandError, Envelope, ErrorCode
from ..settings import Settings
from ..settings.game import link_address
from .frames import (
    Call,
    ChannelEvent,
    Done,
    Failed,
    FromGame,
    Hello,
    Move,
    Ready,
    Reply,
    RoomEvent,
    Send,
    State,
    decode_from_game,
    encode,
    message_of,
)
from .process import RETIRE_GRACE, GameProcesses

__all__ = ["GameLink", "LinkStats"]

logger = logging.getLogger("mudgate.game")
# The websockets library's own records of the link (each connection opening) are debug here.
_link_logger = logging.getLogger("mudgate.game.link")
_link_logger.setLevel(logging.WARNING)

# Messages from the game read ahead of the one being handled (websockets' max_queue); the
# memory budget counts them, each as large as MUDGATE_GAME_LINK_MAX_FRAME_BYTES.
LINK_READ_QUEUE = 4
# Links connected and not yet past their hello: a local process cannot hold more open.
MAX_GREETING = 8
# Players per sync frame: a sync of many players is several frames of bounded size.
SYNC_CHUNK = 500
# Questions (``call``) a game may have under way at once.
MAX_CALLS = 1000
# WebSocket pings on the link: a game whose loop is blocked this long is gone.
PING_INTERVAL = 5.0
PING_TIMEOUT = 10.0
# How often queued commands are checked against game_queue_seconds.
EXPIRY_INTERVAL = 0.25


class Pending:
    """A command or an event on its way to the game (queued, or in flight)."""

    __slots__ = ("at", "conn", "frame", "op", "player_id", "replied", "request_id", "seq")

    def __init__(
        self,
        seq: int,
        frame: bytes,
        at: float,
        *,
        conn: Connection | None = None,
        player_id: str = "",
        op: str = "",
        request_id: str | int | None = None,
    ) -> None:
        self.seq = seq
        self.frame = frame
        self.at = at
        self.conn = conn  # None: an event (a player came, left, moved), answered by nobody
        self.player_id = player_id
        self.op = op
        self.request_id = request_id
        self.replied = False


class Attached:
    """One game process on the link."""

    def __init__(self, ws: ServerConnection, hello: Hello, buffer_bytes: int) -> None:
        self.ws = ws
        self.name = hello.name
        self.pid = hello.pid
        self.ops = {str(entry.get("op")): entry for entry in hello.ops if entry.get("op")}
        self.removed = set(hello.removed) & set(BUILTIN_OPS)
        self.ready = False
        self.retired = False
        self.closing = False  # closed as a slow consumer
        self.in_flight: dict[int, Pending] = {}
        self._buffer_bytes = buffer_bytes
        self._out: deque[bytes] = deque()
        self.out_bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self.writer = asyncio.create_task(self._write(), name="mudgate game link writer")

    async def write_when_room(self, frame: bytes, within: float | None = None) -> bool | None:
        """Queue ``frame`` once the game has read enough for it to fit; False if the link
        closed first, None if there was no room ``within`` seconds (it does not read)."""
        while self.out_bytes and self.out_bytes + len(frame) > self._buffer_bytes:
            if self.writer.done():
                return False
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), within)
            except TimeoutError:
                return None
        if self.writer.done():
            return False
        # Into an empty buffer even if larger than it: a frame of the sync is bounded by itself.
        self._append(frame)
        return True

    def write(self, frame: bytes) -> bool:
        """Queue ``frame`` for the game; False if the game is not reading (over the buffer)."""
        if self.out_bytes + len(frame) > self._buffer_bytes:
            return False
        self._append(frame)
        return True

    def _append(self, frame: bytes) -> None:
        self._out.append(frame)
        self.out_bytes += len(frame)
        self._wake.set()

    async def _write(self) -> None:
        """Send what is queued, several frames to a message (a JSON array) when many wait."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    batch = list(self._out)
                    self._out.clear()
                    message = message_of(batch)
                    await self.ws.send(message, text=True)
                    self.out_bytes -= sum(map(len, batch))
                self._drained.set()
        except ConnectionClosed:
            pass
        finally:
            self._drained.set()  # nobody waits for a link that is gone


class LinkStats:
    """The link's counters, for /metrics and /monitoring."""

    __slots__ = (
        "attached",
        "commands",
        "events_dropped",
        "failed_starts",
        "refused",
        "restarts",
        "slow_consumer",
        "unanswered",
    )

    def __init__(self) -> None:
        self.attached = 0  # game processes that said hello
        self.restarts = 0  # takeovers after the first
        self.failed_starts = 0
        self.commands = 0  # handed to the game
        self.refused = 0  # answered game_unavailable or rate_limited here
        self.unanswered = 0  # answered game_unavailable after the game stopped with them
        self.events_dropped = 0
        self.slow_consumer = 0


class GameLink:
    """The gateway's side of the link to its game (``mudgate serve --game``, or a game that
    attaches by itself over ``game_link``): a ``Forwarder`` for the command registry."""

    def __init__(
        self,
        hub: Hub,
        commands: CommandRegistry,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.commands = commands
        self.settings = settings
        self.clock = clock
        self.stats = LinkStats()
        self.active: Attached | None = None
        self.incoming: Attached | None = None
        self.problem: str | None = "starting" if settings.game else "no game attached yet"
        self._told_restarting = False  # players have heard game_restarting since the last ready
        self._ops: dict[str, dict[str, Any]] = {}
        self._removed: set[str] = set()
        self._queue: deque[Pending] = deque()
        self._queued_bytes = 0
        self._draining = False  # a task hands the queue to the game, in order
        # Commands queued or with the game, per player; and who waits for theirs to be over.
        self._held_by_player: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._seq = 0
        self._calls = 0
        self._greeting = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: Server | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._private_dir: tempfile.TemporaryDirectory[str] | None = None
        self._stopping = False
        self._down_since = clock()
        self.reload_failure: str | None = None
        token = settings.game_token
        self.token = secrets.token_urlsafe(32) if token is None else token.get_secret_value()
        self.address = settings.game_link or ""
        self.processes: GameProcesses | None = None
        hub.hooks.on_connect(self._connected)
        hub.hooks.on_disconnect(self._disconnected)
        hub.hooks.on_room_change(self._moved)

    # Lifecycle

    async def start(self) -> None:
        """Listen for the game and, with ``game``, start its first process."""
        if not self.address:
            self._private_dir = tempfile.TemporaryDirectory(prefix="mudgate-")
            os.chmod(self._private_dir.name, 0o700)
            self.address = str(Path(self._private_dir.name) / "game.sock")
        address = link_address(self.address)
        options: dict[str, Any] = {
            "max_size": self.settings.game_link_max_frame_bytes,
            # Messages read from the game and not yet handled: each up to the largest frame.
            "max_queue": LINK_READ_QUEUE,
            "ping_interval": PING_INTERVAL,
            "ping_timeout": PING_TIMEOUT,
            "compression": None,
            "logger": _link_logger,
        }
        if isinstance(address, tuple):
            self._server = await serve(self._serve_link, address[0], address[1], **options)
        else:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISSOCK(os.stat(address).st_mode):
                    raise OSError(f"the game link {address} exists and is not a socket")
                os.unlink(address)  # a socket left by a gateway that was killed
            self._server = await unix_serve(self._serve_link, address, **options)
            os.chmod(address, 0o600)
        self._expiry = asyncio.create_task(self._expire_forever(), name="mudgate game queue")
        if self.settings.game is not None:
            self.processes = GameProcesses(
                self.settings.game,
                self.address,
                self.token,
                on_exit=self._process_exited,
                reload=self.settings.game_reload,
                on_change=self.reload,
                start_timeout=self.settings.game_start_timeout,
            )
            await self.processes.start()
        logger.info("game link listening on %s", self.address)

    async def stop(self) -> None:
        """Retire the game, stop listening and stop its processes."""
        self._stopping = True
        for attached in (self.active, self.incoming):
            if attached is not None:
                attached.write(encode({"type": "retire"}))
        if self.processes is not None:
            await self.processes.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in [self._expiry, *self._tasks]:
            if task is not None:
                task.cancel()
        if self._expiry is not None:
            await asyncio.wait([self._expiry, *self._tasks])
        self._fail_all(self._queue, "the gateway is shutting down")
        if self._private_dir is not None:
            self._private_dir.cleanup()

    def reload(self, reason: str = "reload") -> None:
        """Start a fresh game process (SIGHUP, ``--reload``); the running one answers until
        the new one is ready, and keeps running if the new one fails to start."""
        if self.processes is None:
            logger.warning(
                "%s: this gateway does not start its game (no --game); restart the game that "
                "attaches to %s yourself: the new one takes over as it attaches",
                reason,
                self.address,
            )
            return
        logger.info("starting a fresh game process (%s)", reason)
        self._notice("game_restarting", reason=reason)
        self._spawn(self.processes.spawn())

    # The registry's Forwarder

    def claims(self, op: str) -> bool:
        return op in self._ops or op in self._removed or not self.commands.runs_here(op)

    def owns(self, op: str) -> bool:
        return op in self._ops

    def schema(self) -> list[dict[str, Any]]:
        return list(self._ops.values())

    def submit(
        self, conn: Connection, player: Player, frame: Envelope, fields: dict[str, Any]
    ) -> None:
        held = self._held_by_player.get(player.id, 0)
        target = self._accepting()
        if held >= self.settings.game_queue_per_player:
            self.stats.refused += 1
            if target is not None:
                raise CommandError(
                    ErrorCode.RATE_LIMITED,
                    f"{held} of your commands are waiting for the game's answer; wait for them",
                    frame.id,
                    retry_after=1.0,
                )
            raise self._unavailable(frame.id)
        self._seq += 1
        encoded = encode(
            {
                "type": "command",
                "seq": self._seq,
                "player": player.id,
                "room": player.room,
                "op": frame.op,
                "id": frame.id,
                "args": fields,
            }
        )
        if self._held_bytes() + len(encoded) > self.settings.game_queue_bytes:
            self.stats.refused += 1
            raise self._unavailable(frame.id, "the game is behind")
        pending = Pending(
            self._seq,
            encoded,
            self.clock(),
            conn=conn,
            player_id=player.id,
            op=frame.op,
            request_id=frame.id,
        )
        self._held_by_player[player.id] = held + 1
        if target is not None:
            self._hand(target, pending)
        else:
            self._queue.append(pending)
            self._queued_bytes += len(encoded)

    def behind(self, player_id: str) -> asyncio.Future[None] | None:
        if player_id not in self._held_by_player:
            return None
        waiter = self._waiters.get(player_id)
        if waiter is None:
            waiter = self._waiters[player_id] = asyncio.get_running_loop().create_future()
        return waiter

    def _unavailable(self, request_id: str | int | None, why: str | None = None) -> CommandError:
        if why is None:
            if self.problem in (None, "starting", "restarting"):
                why = "the game is restarting"
            elif self.processes is None and self.problem == "no game attached yet":
                why = "no game is attached to the gateway yet"
            else:
                why = f"the game is not running ({self.problem})"
        return CommandError(
            ErrorCode.GAME_UNAVAILABLE,
            f"{why}; try again in a moment",
            request_id,
            retry_after=self.retry_after,
        )

    @property
    def retry_after(self) -> float:
        """When a refused player should try again: after the next start attempt, if one is
        planned, else a couple of seconds."""
        delay = 2.0 if self.processes is None else self.processes.next_start_in() + 1.0
        return round(delay, 1)

    # Hooks: the players' comings and goings, for the game's hooks and its view of them.

    def _connected(self, player_id: str) -> None:
        player = self.hub.player(player_id)
        room = player.room if player is not None else ""
        self._event({"type": "connected", "player": player_id, "room": room})
        if self.active is None or self.incoming is not None:
            conn = self.hub.connections_of(player_id)
            if conn and self.problem is not None:
                for each in conn:
                    each.send(self.hub.event("game_restarting", reason=self.problem))
            elif conn and self.incoming is not None:
                for each in conn:
                    each.send(self.hub.event("game_restarting", reason="reload"))

    def _disconnected(self, player_id: str) -> None:
        self._event({"type": "disconnected", "player": player_id})

    def _moved(self, player_id: str, old_room: str, new_room: str) -> None:
        self._event({"type": "moved", "player": player_id, "from": old_room, "to": new_room})

    def _event(self, frame: dict[str, Any]) -> None:
        encoded = encode(frame)
        target = self._accepting()
        if target is not None:
            if not target.write(encoded):
                self._slow_consumer(target)
            return
        if self._held_bytes() + len(encoded) > self.settings.game_queue_bytes:
            self.stats.events_dropped += 1
            return
        self._queue.append(Pending(0, encoded, self.clock()))
        self._queued_bytes += len(encoded)

    # Handing over

    def _accepting(self) -> Attached | None:
        """The game that takes new input now: none while a new one is taking over, nor while
        what waited is still draining into it (new input goes behind it, in order)."""
        if self.incoming is not None or self._queue or self._draining:
            return None
        return self.active

    def _start_draining(self, target: Attached) -> None:
        if self._queue and not self._draining:
            self._draining = True
            self._spawn(self._drain(target))

    async def _drain(self, target: Attached) -> None:
        """Hand what waited to ``target``, in order, each once the link has room for it (what
        waited may be more than the link holds: a game that reads is never taken for one that
        does not)."""
        try:
            while self._queue and target is self.active and self.incoming is None:
                pending = self._queue.popleft()
                self._queued_bytes -= len(pending.frame)
                if pending.conn is not None and pending.conn.state is not ConnectionState.OPEN:
                    self._release(pending)
                    continue
                self._track(target, pending)
                frame, pending.frame = pending.frame, b""
                written = await target.write_when_room(frame, self.settings.game_queue_seconds)
                if written is None:  # no room for that long: the game does not read
                    self._slow_consumer(target)
                    return
                if not written:
                    return  # the link closed: _detach answers what it had
        finally:
            self._draining = False
            active = self.active
            if self._queue and active is not None and active is not target:
                self._start_draining(active)  # a hand-over happened meanwhile

    def _hand(self, target: Attached, pending: Pending) -> None:
        self._track(target, pending)
        written = target.write(pending.frame)
        pending.frame = b""
        if not written:
            self._slow_consumer(target)

    def _track(self, target: Attached, pending: Pending) -> None:
        """A command (not an event) handed to ``target`` waits there for its ``done``, without
        its frame: once written it is the link's buffer's, and no longer this one's."""
        if pending.conn is not None:
            target.in_flight[pending.seq] = pending
            self.stats.commands += 1

    def _held_bytes(self) -> int:
        in_flight = 0 if self.active is None else self.active.out_bytes
        return self._queued_bytes + in_flight

    async def _serve_link(self, ws: ServerConnection) -> None:
        opening = await self._greet(ws)
        if opening is None:
            return
        attached = Attached(ws, opening, self.settings.game_link_buffer_bytes)
        self._attach(attached)
        try:
            async for message in ws:
                try:
                    received, refused = decode_from_game(message)
                except ValueError as error:
                    logger.error("game link: a message from the game was refused: %s", error)
                    continue
                for why in refused:  # the game's mistake; the rest of its message stands
                    logger.error("game link: a frame from the game was refused: %s", why)
                for frame in received:
                    self._receive(attached, frame)
        except ConnectionClosed:
            pass
        finally:
            attached.writer.cancel()
            self._detach(attached)

    async def _greet(self, ws: ServerConnection) -> Hello | None:
        """The link's first frame: a hello with the secret (or a failed start, reported);
        None, and the link closed, otherwise."""
        if self._greeting >= MAX_GREETING:
            await ws.close(1013, "too many links waiting to say hello")
            return None
        self._greeting += 1
        try:
            # The game is imported between connecting and hello: it has the start's time.
            first = await asyncio.wait_for(ws.recv(), self.settings.game_start_timeout)
            frames, refused = decode_from_game(first)
            if refused:
                raise ValueError(refused[0])
        except (TimeoutError, ConnectionClosed):
            return None
        except ValueError as error:
            reason = f"the first frame must be hello: {error}"
            await ws.close(1008, reason.encode()[:120].decode(errors="ignore"))
            return None
        finally:
            self._greeting -= 1
        opening = frames[0] if len(frames) == 1 else None
        if not isinstance(opening, Hello | Failed) or not hmac.compare_digest(
            opening.token.encode(), self.token.encode()
        ):
            logger.warning("game link: refused a connection without the link's secret")
            await ws.close(1008, "hello with the link's token first")
            return None
        if isinstance(opening, Failed):
            self._start_failed(opening.pid, opening.error)
            self._resume()
            await ws.close()
            return None
        return opening

    def _attach(self, attached: Attached) -> None:
        self.stats.attached += 1
        if self.incoming is not None:  # a newer game supersedes one still starting
            self._retire(self.incoming)
        self.incoming = attached
        if self.active is not None and not self._told_restarting:  # a game that came by itself
            self._notice("game_restarting", reason="reload")
        if self.processes is not None:
            self.processes.attached(attached.pid)
        logger.info("game %r (pid %s) attached; syncing", attached.name, attached.pid)
        self._spawn(self._sync(attached))
        self._spawn(self._start_deadline(attached))

    async def _sync(self, attached: Attached) -> None:
        """Tell a new game every player on this node, a chunk at a time, each written once the
        link has room for it (a sync of many players never holds more than the link's buffer)."""
        players = list(self.hub.registry.players.values())
        for start in range(0, len(players), SYNC_CHUNK):
            chunk = encode(
                {
                    "type": "sync",
                    "players": [
                        {
                            "id": player.id,
                            "room": player.room,
                            "connections": len(self.hub.connections_of(player.id)),
                            "state": msgspec.Raw(player.state),
                        }
                        for player in players[start : start + SYNC_CHUNK]
                    ],
                }
            )
            if not await attached.write_when_room(chunk):
                return
        await attached.write_when_room(
            encode(
                {
                    "type": "synced",
                    "node": self.settings.node_name,
                    "max_state_bytes": self.settings.max_player_state_bytes,
                    "max_message_bytes": self.settings.game_link_max_frame_bytes,
                }
            )
        )

    async def _start_deadline(self, attached: Attached) -> None:
        await asyncio.sleep(self.settings.game_start_timeout)
        if self.incoming is attached and not attached.ready:
            self._start_failed(
                attached.pid, f"not ready {self.settings.game_start_timeout:g} s after hello"
            )
            self._retire(attached)
            self.incoming = None  # given up on: what waits goes back to the running game
            self._resume()

    def _receive(self, attached: Attached, frame: FromGame) -> None:
        try:
            self._apply(attached, frame)
        except (ValueError, TypeError) as error:
            logger.error("game link: %s frame refused: %s", type(frame).__name__.lower(), error)

    def _apply(self, attached: Attached, frame: FromGame) -> None:
        if isinstance(frame, Reply):
            pending = attached.in_flight.get(frame.seq)
            if pending is not None and pending.conn is not None:
                fields = frame.fields
                if pending.request_id is not None:  # the answer echoes the frame's id
                    fields.setdefault("id", pending.request_id)
                message = self.hub.event(frame.event, **fields)  # may refuse a reserved field
                pending.replied = True
                self.hub.reply(pending.conn, message)
        elif isinstance(frame, Done):
            self._done(attached, frame)
        elif isinstance(frame, Call):
            if self._calls >= MAX_CALLS:
                attached.write(encode({"type": "result", "call": frame.call, "error": "busy"}))
            else:
                self._calls += 1
                self._spawn(self._answer(attached, frame))
        elif isinstance(frame, Ready):
            if attached is self.incoming and not attached.retired:  # not one given up on
                attached.ready = True
                self._take_over()
        elif isinstance(frame, Hello | Failed):
            raise ValueError("hello and failed come first, once")
        else:
            self._effect(frame)

    def _effect(self, frame: RoomEvent | ChannelEvent | Send | Move | State) -> None:
        """What the game does to the players: events, moves, their state."""
        hub = self.hub
        if isinstance(frame, RoomEvent):
            hub.room_event(frame.room, frame.event, **frame.fields)
        elif isinstance(frame, ChannelEvent):
            hub.channel_event(frame.channel, frame.event, **frame.fields)
        elif isinstance(frame, Send):
            hub.send(frame.player, frame.event, sender=frame.sender, **frame.fields)
        elif isinstance(frame, Move):
            hub.move_player(frame.player, frame.room)
        elif hub.player(frame.player) is not None:  # State
            hub.save_state(frame.player, frame.state)

    def _done(self, attached: Attached, frame: Done) -> None:
        pending = attached.in_flight.pop(frame.seq, None)
        if pending is None or pending.conn is None:
            return  # answered already (it waited too long)
        self._release(pending)
        stats = self.commands.stats
        if stats is not None:  # from when the gateway took it: what the player waited
            stats.observe(
                pending.op,
                self.clock() - pending.at,
                None if frame.error is None else frame.error.code,
            )
        if frame.error is not None:
            error = frame.error
            try:
                code = ErrorCode(error.code)
            except ValueError:
                code = ErrorCode.INTERNAL
            self._answer_error(
                pending,
                CommandError(
                    code, error.message, pending.request_id, retry_after=error.retry_after
                ),
            )
        elif not pending.replied and pending.request_id is not None:
            # A frame with an id gets exactly one answer, whatever the game forgot.
            self.hub.reply(pending.conn, self.hub.event("ok", op=pending.op, id=pending.request_id))
        if attached is not self.active or self.incoming is not None:
            self._take_over()

    async def _answer(self, attached: Attached, call: Call) -> None:
        try:
            value = await self._call(call)
            reply: dict[str, Any] = {"type": "result", "call": call.call, "value": value}
        except Exception as error:  # the game asked something wrong: it hears why
            reply = {"type": "result", "call": call.call, "error": str(error) or repr(error)}
        finally:
            self._calls -= 1
        if not attached.write(encode(reply)):
            self._slow_consumer(attached)

    async def _call(self, call: Call) -> Any:
        args, hub = call.args, self.hub
        if call.method == "players_in":
            return await hub.players_in(str(args["room"]))
        if call.method == "who":
            return await hub.who()
        if call.method == "hold_lease":
            return await hub.hold_lease(str(args["name"]), float(args["ttl_seconds"]))
        # tell
        message = hub.event(str(args["event"]), **dict(args.get("fields") or {}))
        sender = args.get("sender")
        delivery = await hub.tell(str(args["player"]), message, sender=sender)
        return delivery.value

    def _take_over(self) -> None:
        """Make the incoming game the active one once it is ready and the old one has answered
        everything it was running; then the queue drains into it, in order."""
        incoming, old = self.incoming, self.active
        if incoming is None or not incoming.ready or (old is not None and old.in_flight):
            return
        self.active, self.incoming = incoming, None
        self._ops, self._removed = incoming.ops, incoming.removed
        if old is not None:
            self.stats.restarts += 1
            self._retire(old)
        incoming.write(encode({"type": "active"}))
        self._start_draining(incoming)
        self.problem = self.reload_failure = None
        if self.processes is not None:
            self.processes.started(incoming.pid)
        logger.info("game %r (pid %s) is ready", incoming.name, incoming.pid)
        self._notice("game_ready")

    def _retire(self, attached: Attached) -> None:
        attached.retired = True
        attached.write(encode({"type": "retire"}))
        if self.processes is not None:
            self.processes.retire(attached.pid)
        self._spawn(self._close_later(attached))

    async def _close_later(self, attached: Attached) -> None:
        """A retired game closes its link itself once its commands are done; one that does not
        (it stopped reading, it ignores retire) is closed after a grace period."""
        await asyncio.sleep(RETIRE_GRACE)
        await attached.ws.close(1001, "retired")

    def _detach(self, attached: Attached) -> None:
        """The link to ``attached`` closed: it retired, stopped or crashed."""
        self._fail_all(
            attached.in_flight.values(),
            "the game stopped while running your command (it may or may not have happened)",
            unanswered=True,
        )
        attached.in_flight.clear()
        if attached is self.incoming:
            self.incoming = None
            if not attached.retired:
                self._start_failed(attached.pid, "it closed its link before it was ready")
            self._resume()
        elif attached is self.active:
            self.active = None
            self._down_since = self.clock()
            if self.processes is not None:
                self.processes.retire(attached.pid)  # its link is gone: it goes too
            if not self._stopping:
                self.problem = "restarting"
                logger.error(
                    "the game (pid %s) stopped; commands wait for the next one", attached.pid
                )
                self._notice("game_restarting", reason="stopped")
                if self.processes is not None and self.incoming is None:
                    self._spawn(self.processes.respawn())  # (one starting takes over anyway)

    def _resume(self) -> None:
        """No new game is coming: the one running (if any) takes the queue again."""
        if self.active is not None and self.incoming is None:
            self._start_draining(self.active)
            self._notice("game_ready")

    def _start_failed(self, pid: int, why: str) -> None:
        self.stats.failed_starts += 1
        keeping = "; the running game carries on" if self.active is not None else ""
        logger.error("the game (pid %s) failed to start: %s%s", pid, why, keeping)
        last = (why.strip().splitlines() or ["no reason given"])[-1]
        reason = f"failed to start: {last[:200]}"
        if self.active is None:
            self.problem = reason
        else:
            self.reload_failure = reason
        if self.processes is not None:
            self.processes.failed(pid, self.active is None)

    def _process_exited(self, pid: int, code: int | None, attached_ever: bool) -> None:
        """A game process ended (the supervisor saw it)."""
        if not attached_ever and not self._stopping:
            self._start_failed(pid, f"it exited with code {code} before it attached")
            self._resume()

    def _slow_consumer(self, attached: Attached) -> None:
        if attached.closing:
            return
        attached.closing = True
        self.stats.slow_consumer += 1
        logger.error(
            "the game (pid %s) is not reading its link (%d bytes waiting): closing it",
            attached.pid,
            attached.out_bytes,
        )
        attached.retired = attached is not self.active
        self._spawn(attached.ws.close(1008, "slow consumer: the game stopped reading"))
        if self.processes is not None:
            self.processes.kill(attached.pid)

    # Expiry and answers

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            try:
                self.expire()
            except Exception:  # never stop answering what waits too long
                logger.exception("game link: expiring what waits failed")

    def expire(self) -> None:
        """Answer ``game_unavailable`` to every command that has waited game_queue_seconds."""
        deadline = self.clock() - self.settings.game_queue_seconds
        while self._queue and self._queue[0].at <= deadline:
            pending = self._queue.popleft()
            self._queued_bytes -= len(pending.frame)
            if pending.conn is None:
                self.stats.events_dropped += 1
                continue
            self._release(pending)
            self._answer_error(pending, self._unavailable(pending.request_id))
        for attached in (self.active, self.incoming):
            if attached is None:
                continue
            while attached.in_flight:
                pending = next(iter(attached.in_flight.values()))
                if pending.at > deadline:
                    break
                del attached.in_flight[pending.seq]
                self._release(pending)
                self._answer_error(
                    pending,
                    self._unavailable(pending.request_id, "the game did not answer in time"),
                )
        self._take_over()

    def _fail_all(self, pendings: Iterable[Pending], why: str, *, unanswered: bool = False) -> None:
        for pending in list(pendings):
            if pending.conn is None:
                continue
            self._release(pending)
            if unanswered:
                self.stats.unanswered += 1
            self._answer_error(
                pending,
                CommandError(
                    ErrorCode.GAME_UNAVAILABLE,
                    why,
                    pending.request_id,
                    retry_after=self.retry_after,
                ),
            )

    def _answer_error(self, pending: Pending, error: CommandError) -> None:
        conn = pending.conn
        if conn is not None and conn.state is ConnectionState.OPEN:
            answer_error(conn, error)

    def _release(self, pending: Pending) -> None:
        held = self._held_by_player.get(pending.player_id, 0) - 1
        if held > 0:
            self._held_by_player[pending.player_id] = held
            return
        self._held_by_player.pop(pending.player_id, None)
        waiter = self._waiters.pop(pending.player_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _notice(self, event: str, **fields: Any) -> None:
        """Tell every player on this node (``game_restarting``, ``game_ready``)."""
        self._told_restarting = event == "game_restarting"
        message = self.hub.event(event, **fields)
        for conn in self.hub.connections():
            conn.send(message)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("game link task failed", exc_info=task.exception())

    # Monitoring

    def alerts(self) -> tuple[str | None, str | None]:
        """(Why no game answers, if none has for longer than a start takes; why the last new
        game failed to start while the old one carries on, until one starts.)"""
        down = self.active is None and (
            (self.problem is not None and self.problem.startswith("failed"))
            or self.clock() - self._down_since > self.settings.game_start_timeout
        )
        return (self.problem or "no game attached") if down else None, self.reload_failure

    def status(self) -> dict[str, Any]:
        """What /monitoring/game shows."""
        active = self.active
        return {
            "state": "ready"
            if active is not None and self.incoming is None
            else ("restarting" if active is not None or self.incoming is not None else "down"),
            "problem": self.problem,
            "pid": None if active is None else active.pid,
            "name": None if active is None else active.name,
            "address": self.address,
            "in_flight": 0 if active is None else len(active.in_flight),
            "queued": len(self._queue),
            "queued_bytes": self._queued_bytes,
            "attached": self.stats.attached,
            "restarts": self.stats.restarts,
            "failed_starts": self.stats.failed_starts,
            "commands": self.stats.commands,
            "refused": self.stats.refused,
            "unanswered": self.stats.unanswered,
            "events_dropped": self.stats.events_dropped,
            "slow_consumer_closes": self.stats.slow_consumer,
        }
