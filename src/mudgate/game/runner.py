"""The game's end of the link: ``mudgate game MODULE:ATTR --link ADDRESS`` runs a ``Game`` in
a process of its own, against ``LinkedHub``, the hub's API carried over the link
(docs/game-link.md).

The game's commands, hooks and timers run here unchanged. What they send goes to the gateway
as frames, in order; what they ask (``players_in``, ``who``, ``tell``) is a ``call`` the
gateway answers. What they read without waiting (``room_of``, ``local_players_in``,
``state_of``) comes from the game's view of this node's players: the sync it gets on attach,
kept up to date by the gateway's ``connected``, ``disconnected`` and ``moved``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import msgspec
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from ..backplane import Delivery
from ..hub.registry import Player, checked_state
from ..protocol import (
    CHANNEL_FIELD,
    EVENT_FIELDS,
    ROOM_FIELD,
    CommandError,
    Envelope,
    refuse_fields,
)
from ..settings import Settings
from ..settings.game import link_address
from .api import Game
from .frames import encode, message_of

if TYPE_CHECKING:
    from ..hub import Hub

__all__ = ["LinkedEvent", "LinkedHub", "load_game", "run_game"]

logger = logging.getLogger("mudgate.game")

# How long a question to the gateway may take (it answers at once, or after its backplane's
# own timeouts): past it the game's code gets RuntimeError rather than waiting forever.
CALL_TIMEOUT = 30.0
# What room_event and channel_event refuse: the envelope's fields and the one each adds.
_ROOM_EVENT_FIELDS = EVENT_FIELDS | ROOM_FIELD
_CHANNEL_EVENT_FIELDS = EVENT_FIELDS | CHANNEL_FIELD


def load_game(spec: str) -> Game:
    """Import ``MODULE:ATTR``: a ``Game``, or a function returning one."""
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(found, Game) and callable(found):
        found = found()
    if not isinstance(found, Game):
        raise TypeError(f"{spec} is a {type(found).__name__}, not a mudgate.Game")
    return found


class LinkedEvent:
    """An event the game built (``hub.event``), sent as its name and fields: the gateway
    stamps it (``ts``, ``seq``) when it delivers it."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event = event
        self.fields = fields


class LinkedConnection:
    """The connection a command came from, as a handler sees it: ``send`` answers it."""

    __slots__ = ("_hub", "player_id", "seq")

    def __init__(self, hub: LinkedHub, seq: int, player_id: str) -> None:
        self._hub = hub
        self.seq = seq
        self.player_id = player_id

    def send(self, message: LinkedEvent) -> bool:
        self._hub.write(
            {"type": "reply", "seq": self.seq, "event": message.event, "fields": message.fields}
        )
        return True


class LinkedHub:
    """The hub's API for a game in a process of its own. Sending never waits; asking does."""

    def __init__(self, game: Game, settings: Settings) -> None:
        self.game = game
        self.settings = settings
        self.hooks = game.hooks
        self.players: dict[str, Player] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.max_state_bytes = settings.max_player_state_bytes
        self.max_message_bytes = settings.game_link_max_frame_bytes
        self.node = ""
        self._out: list[bytes] = []
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._call_seq = 0

    # What the game sends

    def write(self, frame: dict[str, Any]) -> None:
        encoded = encode(frame)
        if len(encoded) > self.max_message_bytes:
            raise ValueError(
                f"a {frame.get('type')} frame of {len(encoded)} bytes is over the link's "
                f"{self.max_message_bytes} (MUDGATE_GAME_LINK_MAX_FRAME_BYTES)"
            )
        self._out.append(encoded)
        self._wake.set()

    def event(self, name: str, /, **fields: Any) -> LinkedEvent:
        refuse_fields(name, fields, EVENT_FIELDS)
        return LinkedEvent(name, fields)

    def reply(self, conn: LinkedConnection, message: LinkedEvent) -> bool:
        """A command's answer (``CommandContext.reply``): the link sends it to the player,
        and the gateway keeps it behind what its node published before."""
        return conn.send(message)

    def room_event(self, room: str, event: str, /, **fields: Any) -> None:
        refuse_fields(event, fields, _ROOM_EVENT_FIELDS)
        self.write({"type": "room", "room": room, "event": event, "fields": fields})

    def channel_event(self, channel: str, event: str, /, **fields: Any) -> None:
        refuse_fields(event, fields, _CHANNEL_EVENT_FIELDS)
        self.write({"type": "channel", "channel": channel, "event": event, "fields": fields})

    def send(
        self,
        player_id: str,
        event: str | LinkedEvent,
        /,
        *,
        sender: str | None = None,
        **fields: Any,
    ) -> Delivery:
        """Send to one player wherever they are; ``SENT`` if they are on this node, else
        ``ROUTED`` (the gateway keeps or forwards it; ``tell`` says what became of it)."""
        message = self.event(event, **fields) if isinstance(event, str) else event
        self.write(
            {
                "type": "send",
                "player": player_id,
                "event": message.event,
                "fields": message.fields,
                "sender": sender,
            }
        )
        return Delivery.SENT if player_id in self.players else Delivery.ROUTED

    def move_player(self, player_id: str, room: str) -> bool:
        player = self.players.get(player_id)
        if player is None:
            return False
        player.room = room
        self.write({"type": "move", "player": player_id, "room": room})
        return True

    def move(self, player: Player, room: str) -> None:
        self.move_player(player.id, room)

    def save_state(self, player_id: str, state: Mapping[str, Any]) -> None:
        if player_id not in self.players:
            raise ValueError(f"player {player_id!r} is not online on this node")
        checked_state(state, self.max_state_bytes)  # ValueError here, where the game can see it
        kept = dict(state)
        self.states[player_id] = kept
        self.write({"type": "state", "player": player_id, "state": kept})

    # What the game reads without waiting (this node's players)

    def player(self, player_id: str) -> Player | None:
        return self.players.get(player_id)

    def room_of(self, player_id: str) -> str | None:
        player = self.players.get(player_id)
        return None if player is None else player.room

    def local_players_in(self, room: str) -> list[str]:
        return sorted(p.id for p in self.players.values() if p.room == room)

    def state_of(self, player_id: str) -> dict[str, Any]:
        return dict(self.states.get(player_id, {}))

    # What the game asks the gateway

    async def _ask(self, method: str, **args: Any) -> Any:
        self._call_seq += 1
        call = self._call_seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call] = future
        self.write({"type": "call", "call": call, "method": method, "args": args})
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await future
        except TimeoutError:
            raise RuntimeError(
                f"the gateway did not answer {method} in {CALL_TIMEOUT:g} s"
            ) from None
        finally:
            self._calls.pop(call, None)

    async def players_in(self, room: str) -> list[str]:
        return cast(list[str], await self._ask("players_in", room=room))

    async def occupants(self, room: str) -> list[str]:
        return await self.players_in(room)

    async def who(self) -> list[str]:
        return cast(list[str], await self._ask("who"))

    async def tell(
        self,
        player_id: str,
        event: str | LinkedEvent,
        /,
        *,
        sender: str | None = None,
        **fields: Any,
    ) -> Delivery:
        message = self.event(event, **fields) if isinstance(event, str) else event
        value = await self._ask(
            "tell", player=player_id, event=message.event, fields=message.fields, sender=sender
        )
        return Delivery(value)

    async def hold_lease(self, name: str, ttl_seconds: float) -> bool:
        try:
            return bool(await self._ask("hold_lease", name=name, ttl_seconds=ttl_seconds))
        except RuntimeError:
            return False

    def answered(self, call: int, value: Any, error: str | None) -> None:
        future = self._calls.get(call)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(RuntimeError(f"the gateway refused the call: {error}"))
        else:
            future.set_result(value)

    # The gateway's news of this node's players

    def sync(self, players: list[dict[str, Any]]) -> None:
        for entry in players:
            player_id = str(entry["id"])
            self.players[player_id] = Player(player_id, str(entry["room"]), 0.0)
            self.states[player_id] = dict(entry.get("state") or {})

    def connected(self, player_id: str, room: str) -> None:
        if player_id not in self.players:
            self.players[player_id] = Player(player_id, room, 0.0)
            self.states.setdefault(player_id, {})

    def disconnected(self, player_id: str) -> None:
        self.players.pop(player_id, None)
        self.states.pop(player_id, None)

    def moved(self, player_id: str, room: str) -> None:
        player = self.players.get(player_id)
        if player is not None:
            player.room = room

    async def drain(self, timeout_seconds: float = 2.0) -> None:
        """Wait (at most ``timeout_seconds``) until everything written has been sent."""
        if self._out:
            self._sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent.wait(), timeout_seconds)

    async def flush(self, ws: ClientConnection) -> None:
        """Send what the game wrote, several frames to a message when many wait."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                # As many frames as fit in one message the gateway takes, in order.
                size, count = 2, 0
                for frame in self._out:
                    if count and size + len(frame) + 1 > self.max_message_bytes:
                        break
                    size += len(frame) + 1
                    count += 1
                batch, self._out = self._out[:count], self._out[count:]
                message = message_of(batch)
                await ws.send(message, text=True)
            self._sent.set()


class _Runner:
    """One game process: the link, the commands under way (in order per player), the game."""

    def __init__(self, game: Game, hub: LinkedHub, ws: ClientConnection) -> None:
        self.game = game
        self.hub = hub
        self.ws = ws
        self.retired = asyncio.Event()
        # Each player's latest command: the next one waits for it, so a player's commands
        # run in the order they were sent, as in the gateway's process.
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._decoder = msgspec.json.Decoder()
        self._starting: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        reading = asyncio.create_task(self._read())
        retired = asyncio.create_task(self.retired.wait())
        try:
            await asyncio.wait((reading, retired), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, retired):
                task.cancel()
        if reading.done() and not reading.cancelled() and reading.exception() is not None:
            raise reading.exception()  # type: ignore[misc]

    async def _read(self) -> None:
        async for message in self.ws:
            raw = self._decoder.decode(message)
            for frame in raw if isinstance(raw, list) else [raw]:
                await self._receive(frame)
                if self.retired.is_set():
                    return

    async def _receive(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        hub = self.hub
        if kind == "command":
            self._command(frame)
        elif kind == "result":
            hub.answered(int(frame["call"]), frame.get("value"), frame.get("error"))
        elif kind == "connected":
            hub.connected(frame["player"], frame["room"])
            self.game.hooks.connected(frame["player"])
        elif kind == "disconnected":
            hub.disconnected(frame["player"])
            self.game.hooks.disconnected(frame["player"])
        elif kind == "moved":
            hub.moved(frame["player"], frame["to"])
            self.game.hooks.moved(frame["player"], frame["from"], frame["to"])
        elif kind == "sync":
            hub.sync(frame["players"])
        elif kind == "synced":
            hub.node = str(frame.get("node", ""))
            hub.max_state_bytes = int(frame.get("max_state_bytes", hub.max_state_bytes))
            hub.max_message_bytes = int(frame.get("max_message_bytes", hub.max_message_bytes))
            # A task: its on_start functions may ask the gateway, whose answers this loop reads.
            self._starting = asyncio.create_task(self._start())
        elif kind == "active":
            self.game.start_timers()
        elif kind == "retire":
            self.retired.set()

    async def _start(self) -> None:
        try:
            await self.game.start(cast("Hub", self.hub))
        except Exception:
            logger.exception("the game's on_start failed: it does not start")
            self.retired.set()  # the link closes; the gateway counts a failed start
            return
        self.hub.write({"type": "ready"})

    def _command(self, frame: dict[str, Any]) -> None:
        player_id = str(frame["player"])
        player = self.hub.players.get(player_id)
        if player is None:  # a command from a player the sync did not know yet
            player = self.hub.players[player_id] = Player(player_id, str(frame["room"]), 0.0)
        player.room = str(frame["room"])
        previous = self._tails.get(player_id)
        task = asyncio.create_task(self._run(frame, player, previous))
        self._tails[player_id] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(player_id, done))

    def _finished(self, player_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(player_id) is task:
            del self._tails[player_id]

    async def _run(
        self, frame: dict[str, Any], player: Player, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait((previous,))
        seq = int(frame["seq"])
        envelope = Envelope(op=str(frame["op"]), id=frame.get("id"))
        conn = LinkedConnection(self.hub, seq, player.id)
        fields = dict(frame.get("args") or {})
        error: dict[str, Any] | None = None
        try:
            await self.game.commands.execute(
                cast("Hub", self.hub), cast(Any, conn), envelope, fields
            )
        except CommandError as failed:
            error = {"code": failed.code, "message": str(failed)}
            if failed.retry_after is not None:
                error["retry_after"] = failed.retry_after
        self.hub.write({"type": "done", "seq": seq, "error": error})

    async def finish(self) -> None:
        """Let the commands under way finish (retiring), then stop the game."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        await self.game.stop()


async def run_game(spec: str, address: str, token: str, settings: Settings) -> int:
    """Attach the game ``spec`` to the gateway at ``address``; the exit code."""
    target = link_address(address)
    options: dict[str, Any] = {"max_size": None, "compression": None, "ping_interval": 5.0}
    opening = (
        connect(f"ws://{target[0]}:{target[1]}/", **options)
        if isinstance(target, tuple)
        else unix_connect(target, uri="ws://localhost/", **options)
    )
    async with opening as ws:
        try:
            game = load_game(spec)
        except BaseException as error:  # whatever the game's import raises, the gateway hears
            logger.error("the game %s cannot start", spec, exc_info=True)
            reason = "".join(traceback.format_exception_only(error)).strip()
            await ws.send(
                encode({"type": "failed", "token": token, "error": reason, "pid": os.getpid()}),
                text=True,
            )
            return 1
        hub = LinkedHub(game, settings)
        await ws.send(
            encode(
                {
                    "type": "hello",
                    "token": token,
                    "name": game.name,
                    "pid": os.getpid(),
                    "ops": game.commands.schema(game.commands.own_ops()),
                    "removed": game.commands.removed_builtins(),
                }
            ),
            text=True,
        )
        runner = _Runner(game, hub, ws)
        writer = asyncio.create_task(hub.flush(ws))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        serving = asyncio.create_task(runner.serve())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
            await runner.finish()
            await hub.drain()  # what the commands finishing wrote goes out before the link closes
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            serving.cancel()
            stopping.cancel()
        if serving.done() and not serving.cancelled():
            failure = serving.exception()
            if failure is not None and not isinstance(failure, ConnectionClosed):
                logger.error("the game link failed", exc_info=failure)
                return 1
    return 0
