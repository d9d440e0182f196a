"""The memory budget: the worst case the configured caps allow, beside the effective limit.

Each structure's worst case is its cap times the measured size of one entry. Entry sizes are
measured once per process with tracemalloc over real entries built with the real containers;
a connection's transport cost (its protocol objects) comes from ``bench/idle_memory.py``, and
its outbox may hold up to ``outbox_max_bytes``. Every TCP connection, a player's or not, may
also hold its kernel buffers, a read waiting to be parsed, its transport's write buffer, a
request body the app has not taken and a request head; every WebSocket one message, arriving
or being handled (its text up to 4 bytes a character); every compressed one its zlib state.
The process itself, as it was before any player came, is the first line: a budget that fits
is a process that fits.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode

from ..bounded import Mailboxes, SlidingWindowLimiter, TokenBuckets, TTLMap
from ..protocol import Outgoing, encode_event
from ..settings import Settings

__all__ = [
    "TELNET_LOGIN_BYTES",
    "BudgetLine",
    "MemoryBudget",
    "deflate_bytes",
    "entry_sizes",
    "mccp_bytes",
    "memory_budget",
]

# Server RSS per idle WebSocket on mudgate's own protocol classes, measured with
# bench/idle_memory.py (10.7 KiB at 2,000 connections; uvicorn's were 21).
TRANSPORT_BYTES_PER_CONNECTION = 11 * 1024
_SAMPLES = 500
# Room history (backplane/history.py): what a kept event costs beyond its bytes (its Outgoing,
# the entry tuple, its time and offset, the bytes object's header, the list's slot): 290
# measured; and what a remembered room or channel costs beyond its events (its record, its
# key and epoch, its empty list, its slots in the speaking and the quiet dicts): 380 to 510
# measured, the most just after a dict grew. Measured with tracemalloc by
# tests/test_history.py, rounded up.
# A room's name as a str: its object and at most 32 ASCII characters.
ROOM_NAME_BYTES = 96
HISTORY_ENTRY_BYTES = 320
HISTORY_TOPIC_BYTES = 600
# What the hub notes of a topic Redis numbers (its position: an OrderedDict entry, 154 bytes by
# tracemalloc, its key and its epoch, about 130 more), rounded up.
SEEN_TOPIC_BYTES = 320
# A command queued for Redis besides its arguments' bytes: its tuple and their object headers.
COMMAND_OVERHEAD_BYTES = 256


@dataclass(frozen=True, slots=True)
class BudgetLine:
    structure: str
    max_entries: int
    bytes_per_entry: int

    @property
    def worst_case_bytes(self) -> int:
        return self.max_entries * self.bytes_per_entry


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    lines: tuple[BudgetLine, ...]
    limit_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(line.worst_case_bytes for line in self.lines)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.limit_bytes

    def largest(self) -> BudgetLine:
        return max(self.lines, key=lambda line: line.worst_case_bytes)


def _measure(build: Callable[[int], object], samples: int = _SAMPLES) -> int:
    """Bytes per entry: what building ``samples`` entries allocates, divided by their number."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [build(i) for i in range(samples)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    del kept
    return max(1, (after - before) // samples)


@functools.cache
def entry_sizes() -> dict[str, int]:
    """The measured size in bytes of one entry of each kind (cached for the process)."""
    last_seen: TTLMap[str, float] = TTLMap(10 * _SAMPLES, 60.0)
    limiter = SlidingWindowLimiter(10, 60.0, 10 * _SAMPLES)
    buckets = TokenBuckets(1.0, 10, 10 * _SAMPLES)
    room: dict[str, set[str]] = {}
    online: dict[str, object] = {}
    mailboxes: Mailboxes[str, Outgoing] = Mailboxes(10 * _SAMPLES, 10, 2**40, 60.0, sizeof=len)

    def pending_message(i: int) -> None:
        # A small message: what is measured is the bookkeeping around its payload.
        mailboxes.append(f"player-{i:024d}", encode_event("tell", {"text": "x", "seq": i}))

    return {
        "last_seen": _measure(lambda i: last_seen.set(f"player-{i:024d}", float(i))),
        # An online player: its record (room, channels, connected at) and its connection list.
        "online_player": _measure(
            lambda i: online.setdefault(f"player-{i:024d}", ([f"r{i:031d}", set(), 0.0], []))
        ),
        "rate_limit_key": _measure(lambda i: limiter.hit(f"player:player-{i:024d}")),
        "message_rate": _measure(lambda i: buckets.take(f"player-{i:024d}")),
        "room_entry": _measure(lambda i: room.setdefault(f"room-{i:027d}", {f"p{i:031d}"})),
        "pending_message": _measure(pending_message),
    }


@functools.cache
def deflate_bytes(window_bits: int, mem_level: int) -> int:
    """The measured cost in bytes of one compressed WebSocket's zlib state (both ways, each
    having been used once: zlib allocates the inflate window on first use)."""
    factory = ServerPerMessageDeflateFactory(
        server_max_window_bits=window_bits,
        client_max_window_bits=window_bits,
        compress_settings={"memLevel": mem_level},
    )
    peer = zlib.compressobj(wbits=-window_bits)
    sample = b'{"type":"event","event":"say","from":"alice","text":"hello","seq":1}'
    compressed = peer.compress(sample) + peer.flush(zlib.Z_SYNC_FLUSH)
    incoming = Frame(Opcode.TEXT, compressed[:-4], rsv1=True)

    def connection(i: int) -> object:
        _, extension = factory.process_request_params([("client_max_window_bits", None)], [])
        extension.encode(Frame(Opcode.TEXT, sample))
        extension.decode(incoming)
        return extension

    return _measure(connection, samples=50)


@functools.cache
def mccp_bytes(window_bits: int, mem_level: int) -> int:
    """The measured cost in bytes of one MCCP2 compressed telnet connection's zlib state
    (having compressed once: zlib allocates its window on first use)."""
    sample = b"\x1b[33malice\x1b[0m says: hello, how are you all today?\r\n" * 4

    def connection(i: int) -> object:
        compressor = zlib.compressobj(6, zlib.DEFLATED, window_bits, mem_level)
        compressor.compress(sample)
        compressor.flush(zlib.Z_SYNC_FLUSH)
        return compressor

    return _measure(connection, samples=50)


# What a telnet connection holds before it is a player, besides its socket's buffers: its
# protocol objects (parser, options, flow control) and a line typed at the login prompt
# (server/telnet's LOGIN_LINE_BYTES); tests/telnet checks the measured size stays under it.
TELNET_LOGIN_BYTES = 6 * 1024

# Messages the game link reads ahead (game/link.py's LINK_READ_QUEUE; memory/ imports nothing
# above it, so the figure is repeated here and tests/game checks the two agree).
GAME_LINK_READ_QUEUE = 4
# A command with the game, without its frame: game/link.py's Pending and its dict entry.
GAME_COMMAND_BYTES = 256
# A bytes object's own size, on top of its contents (sys.getsizeof(b"")).
BYTES_OBJECT = 33


def memory_budget(settings: Settings, limit_bytes: int, process_bytes: int = 0) -> MemoryBudget:
    """The worst case the caps in ``settings`` allow, per structure, on top of
    ``process_bytes`` (the process before any player: its first memory reading)."""
    sizes = entry_sizes()
    per_connection = TRANSPORT_BYTES_PER_CONNECTION + settings.outbox_max_bytes
    # Pending messages are capped in payload bytes as a whole; each also holds its payload
    # twice (the bytes and the text sent on WebSockets) and its bookkeeping.
    smallest = len(encode_event("tell", {"from": "a", "to": "b", "text": "x", "ts": 0, "seq": 0}))
    pending_count = min(
        settings.max_players * settings.max_pending_messages,
        settings.max_pending_bytes // smallest,
    )
    pending_per_message = sizes["pending_message"] + -(
        -2 * settings.max_pending_bytes // pending_count
    )
    # Every TCP connection, players included, below ASGI: what the kernel may hold for it
    # (twice each buffer size, for its bookkeeping), one read of what its receive buffer held
    # waiting to be parsed, what the transport buffers before reading stops and the request
    # body received before the app takes it (write_buffer_bytes each), and a request head.
    per_socket = (
        2 * (settings.socket_send_buffer_bytes + settings.socket_receive_buffer_bytes)
        + 2 * settings.socket_receive_buffer_bytes
        + 2 * settings.write_buffer_bytes
        + settings.max_request_head_bytes
    )
    # POST /commands bodies, read whole (up to max_message_bytes) before they are dispatched.
    commands_in_flight = min(
        settings.max_sockets,
        settings.max_players * settings.max_commands_in_flight_per_player,
    )
    compressed = (
        min(settings.max_compressed_connections, settings.max_connections)
        if settings.ws_per_message_deflate
        else 0
    )
    lines = (
        BudgetLine("process", 1, process_bytes),
        BudgetLine("sockets", settings.max_sockets, per_socket),
        BudgetLine("connections", settings.max_connections, per_connection),
        # One message a connection: nothing is parsed while the app handles one. Its bytes
        # while it arrives, then its text, which takes up to 4 bytes a character (one emoji
        # among ASCII makes the whole str 4 bytes a character).
        BudgetLine("messages_in_flight", settings.max_connections, 4 * settings.max_message_bytes),
        BudgetLine("commands_in_flight", commands_in_flight, settings.max_message_bytes),
        BudgetLine(
            "compressed_connections",
            compressed,
            deflate_bytes(settings.ws_deflate_window_bits, settings.ws_deflate_mem_level)
            if compressed
            else 0,
        ),
        # Commands waiting to be written to Redis: their arguments' bytes capped as a whole,
        # and each command's own objects.
        BudgetLine(
            "backplane_queue",
            1 if settings.backplane else 0,
            settings.backplane_queue_bytes + settings.backplane_queue_size * COMMAND_OVERHEAD_BYTES,
        ),
        BudgetLine("online_players", settings.max_players, sizes["online_player"]),
        BudgetLine("room_occupants", settings.max_players, sizes["room_entry"]),
        BudgetLine(
            "room_subscriptions",
            settings.max_players * (1 + settings.max_subscriptions_per_player),
            sizes["room_entry"],
        ),
        BudgetLine("last_seen", settings.max_players, sizes["last_seen"]),
        # The room each player who left recently left from (a resume's one way back in): an
        # entry like last_seen's, and its room name (at most 32 characters).
        BudgetLine("left_rooms", settings.max_players, sizes["last_seen"] + ROOM_NAME_BYTES),
        BudgetLine("connection_attempts", settings.max_rate_limit_keys, sizes["rate_limit_key"]),
        BudgetLine("message_rate_limits", settings.max_players, sizes["message_rate"]),
        BudgetLine("pending_messages", pending_count, pending_per_message),
        # What a game keeps for each player (Hub.save_state), as JSON bytes and their object.
        BudgetLine(
            "player_state", settings.max_players, settings.max_player_state_bytes + BYTES_OBJECT
        ),
        # A game in a process of its own: what waits for it, what is written to it and not yet
        # read, and its messages read ahead (the link's read queue) and being read.
        BudgetLine(
            "game_link",
            1 if settings.game or settings.game_link else 0,
            settings.game_queue_bytes
            + settings.game_link_buffer_bytes
            + (GAME_LINK_READ_QUEUE + 1) * settings.game_link_max_frame_bytes,
        ),
        # Each player's commands with the game: their bookkeeping (the frames are in game_link).
        BudgetLine(
            "game_commands",
            settings.max_players * settings.game_queue_per_player
            if settings.game or settings.game_link
            else 0,
            GAME_COMMAND_BYTES,
        ),
        # Telnet: every socket may be one, each with a subnegotiation arriving and, before it
        # signs in, its protocol objects and a login line (a player's line is one message in
        # flight); the compressed ones hold a zlib state each (MCCP2).
        BudgetLine(
            "telnet",
            settings.max_sockets if settings.telnet_port is not None else 0,
            settings.telnet_max_subnegotiation_bytes + TELNET_LOGIN_BYTES,
        ),
        BudgetLine(
            "telnet_compressed",
            min(settings.telnet_max_compressed, settings.max_sockets)
            if settings.telnet_port is not None
            else 0,
            mccp_bytes(settings.telnet_mccp_window_bits, settings.telnet_mccp_mem_level),
        ),
        # Room and channel history for players who reconnect: the events' bytes and overhead,
        # capped as a whole, and each topic remembered (its epoch and latest offset).
        BudgetLine(
            "room_history",
            1 if settings.room_history_size else 0,
            settings.room_history_max_bytes,
        ),
        BudgetLine(
            "room_history_topics",
            settings.room_history_max_topics if settings.room_history_size else 0,
            # With Redis, the hub also notes where each topic it delivers is (Hub.position).
            HISTORY_TOPIC_BYTES + (SEEN_TOPIC_BYTES if settings.backplane else 0),
        ),
        # The game's process, in the same container: at least what the gateway's own process
        # is before any player (it loads the same code); what the game itself holds is its own.
        BudgetLine("game_process", 1 if settings.game else 0, process_bytes),
    )
    return MemoryBudget(lines, limit_bytes)
