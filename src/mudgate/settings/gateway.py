"""The gateway's settings: serving, the hub's structures, connections, what a player may send,
and the sockets below ASGI. ``Settings`` (model.py) combines these groups with operations.py's;
each field is ``MUDGATE_<NAME>``."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from .types import OptionalSeconds, PositiveFloat, PositiveInt, PositiveSeconds


class Serving(BaseModel):
    """Where the gateway listens, and who may use it."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(
        54731, ge=0, le=65535, description="TCP port to listen on (0: any free port)."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs player tokens (at least 32 characters). "
        "Unset or empty: a random one per start, so tokens do not survive a restart.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for admin endpoints (at least 16 characters). Unset or empty: "
        "a random one, logged once at start.",
    )
    allow_guests: bool = Field(True, description="Whether `POST /auth/guest` issues guest tokens.")
    token_ttl: PositiveSeconds = Field(86400.0, description="Lifetime of a player token, seconds.")
    guest_token_ttl: PositiveSeconds = Field(
        3600.0, description="Lifetime of a guest token, seconds."
    )
    token_clock_skew: float = Field(
        60.0,
        ge=0,
        description="How far ahead of this server's clock a token's `iat` may be, seconds (the "
        "clock of a service that signs tokens may run a little ahead); past it the token is "
        "refused.",
    )
    guest_tokens_per_minute: PositiveInt = Field(
        10, description="Guest tokens one IP address may obtain per minute."
    )
    admin_failures_per_minute: PositiveInt = Field(
        10,
        description="Wrong admin tokens one IP address may present per minute; past it admin "
        "endpoints answer 429 to that address.",
    )

    @field_validator("secret_key", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `MUDGATE_ADMIN_TOKEN=` in a compose file or unit means "not set", not "the empty
        # token" (which nobody could present, locking the admin out).
        return None if value == "" else value

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        # HS256 wants a key at least as long as its 256-bit digest.
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters long")
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token_length(cls, value: SecretStr | None) -> SecretStr | None:
        # Short enough to guess is as good as none.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters long")
        return value


class Structures(BaseModel):
    """The caps and TTLs of the hub's structures (DESIGN.md section 3)."""

    max_connections: PositiveInt = Field(
        10000, description="Open WebSocket plus SSE connections; past it new ones get 1013/503."
    )
    max_connections_per_player: PositiveInt = Field(
        3, description="Connections one player may hold; the oldest is closed (4009) past it."
    )
    max_players: PositiveInt = Field(
        10000, description="Players online at once; also caps last_seen."
    )
    max_pending_messages: PositiveInt = Field(
        1000, description="Messages queued for one briefly offline player; the oldest go first."
    )
    pending_message_ttl: PositiveSeconds = Field(
        3600.0, description="How long a queued message waits for its player, seconds."
    )
    max_pending_bytes: PositiveInt = Field(
        64 * 1024 * 1024,
        description="Bytes of messages queued for all offline players together; past it, "
        "a tell to an offline player is refused.",
    )
    max_rate_limit_entries: PositiveInt = Field(
        1000,
        description="Connection attempts allowed per player and per IP address within "
        "connection_attempt_ttl.",
    )
    max_rate_limit_keys: PositiveInt = Field(
        100000, description="Players and IPs tracked for rate limiting; the idlest is forgotten."
    )
    connection_attempt_ttl: PositiveSeconds = Field(
        3600.0, description="Window of the connection-attempt rate limit, seconds."
    )
    last_seen_ttl: PositiveSeconds = Field(
        3600.0,
        description="How long a player who left is remembered (and receives pending messages).",
    )
    max_subscriptions_per_player: PositiveInt = Field(
        128, description="Channels one player may subscribe to."
    )


class Connections(BaseModel):
    """What each player connection may hold and how long it may live."""

    max_connection_age: OptionalSeconds = Field(
        3600.0, description="Connections older than this are recycled (4010), seconds; 0: never."
    )
    idle_timeout: OptionalSeconds = Field(
        1800.0,
        description="Connections that sent nothing for this long are closed (4011), "
        "seconds; 0: never.",
    )
    ping_interval: PositiveSeconds = Field(
        20.0, description="WebSocket ping and SSE keep-alive interval, seconds."
    )
    ping_timeout: PositiveSeconds = Field(
        20.0, description="How long a ping may go unanswered before the peer is dropped, seconds."
    )
    max_message_bytes: PositiveInt = Field(
        65536,
        description="Largest message a client may send, whole or in fragments; larger ones "
        "close with 1009. Each connection may hold one message this size while it arrives.",
    )
    max_message_fragments: PositiveInt = Field(
        128,
        description="Frames one WebSocket message may arrive in, empty ones included; past it "
        "the connection is closed with 1008.",
    )
    outbox_max_messages: PositiveInt = Field(
        1000, description="Messages queued for one connection before it is a slow consumer."
    )
    outbox_max_bytes: PositiveInt = Field(
        262144, description="Bytes queued for one connection before it is a slow consumer (4008)."
    )
    write_timeout: PositiveSeconds = Field(
        10.0, description="How long one write to a client may block before 4008, seconds."
    )
    bad_frame_limit: PositiveInt = Field(
        10, description="Bad frames a connection may send per bad_frame_window before 1008."
    )
    bad_frame_window: PositiveSeconds = Field(
        10.0, description="Window of the bad-frame limit, seconds."
    )
    ws_per_message_deflate: bool = Field(
        False,
        description="Offer WebSocket compression (permessage-deflate); at the window and "
        "memLevel below it costs about 32 KiB per compressed connection, counted in the memory "
        "budget.",
    )
    ws_deflate_window_bits: Annotated[int, Field(ge=9, le=15)] = Field(
        11,
        description="Compression window, both ways (server_max_window_bits and "
        "client_max_window_bits, 9-15: 2**bits bytes); a client that cannot be held to it is "
        "served without compression.",
    )
    ws_deflate_mem_level: Annotated[int, Field(ge=1, le=9)] = Field(
        4,
        description="zlib memLevel of the compressor (1-9): it holds 2**(memLevel+9) bytes "
        "beside its window.",
    )
    max_compressed_connections: PositiveInt = Field(
        1000,
        description="WebSockets that may be compressed at once; past it, new ones are accepted "
        "without compression.",
    )
    control_frame_limit: PositiveInt = Field(
        20,
        description="WebSocket pings (and unsolicited pongs) a client may send per "
        "control_frame_window; past it the connection is closed with 1008.",
    )
    control_frame_window: PositiveSeconds = Field(
        10.0, description="Window of the control-frame limit, seconds."
    )


class PlayerRates(BaseModel):
    """What one player may send (DESIGN.md invariant 10)."""

    player_messages_per_second: PositiveFloat = Field(
        10.0,
        description="Frames one player may send per second, all their connections and POST "
        "/commands together, once their burst is spent; past it: a rate_limited error.",
    )
    player_message_burst: PositiveInt = Field(
        30,
        description="Frames a player may send at once before the per-second rate applies; a "
        "player who sends another burst while limited is closed with 4029.",
    )
    max_commands_in_flight_per_player: PositiveInt = Field(
        2,
        description="POST /commands requests one player may have under way at once (body "
        "arriving, or being handled); past it: 429.",
    )
    max_commands_in_flight_per_address: PositiveInt = Field(
        16,
        description="POST /commands requests one IP address may have under way at once, all "
        "its players together; past it: 429.",
    )
    max_pending_per_sender: PositiveInt = Field(
        100,
        description="Messages one player may have waiting for players who are away (here or "
        "in Redis); past it their tells to absent players are refused.",
    )


class Sockets(BaseModel):
    """Below ASGI: every TCP connection, whatever it carries (DESIGN.md invariant 9)."""

    max_sockets: PositiveInt = Field(
        11000,
        description="Open TCP connections of every kind. Past it, the oldest connection still "
        "waiting for a request is closed to make room; if none is, the new one is closed at "
        "once. Lowered at start to fit the process's file descriptor limit.",
    )
    request_timeout: PositiveSeconds = Field(
        10.0,
        description="Time a client has to send a whole request (line, headers, body) after "
        "connecting or after its previous response; past it: 408 and closed, seconds.",
    )
    keep_alive_timeout: PositiveSeconds = Field(
        5.0, description="How long an HTTP connection may wait idle for its next request, seconds."
    )
    max_request_head_bytes: Annotated[int, Field(ge=1024)] = Field(
        16384,
        description="Largest request line plus headers; past it: 414 (a longer request line) "
        "or 431, and closed.",
    )
    write_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        65536,
        description="Bytes the server buffers for one connection above the kernel's; past it "
        "the connection is not read until the client catches up (read backpressure). Also "
        "what it holds of a request body the app has not taken yet.",
    )
    socket_send_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        32768,
        description="SO_SNDBUF of every accepted socket: what the kernel may hold for a client "
        "that does not read (it allows twice this, for its bookkeeping).",
    )
    socket_receive_buffer_bytes: Annotated[int, Field(ge=4096)] = Field(
        16384,
        description="SO_RCVBUF of every accepted socket: what the kernel may hold from a client "
        "that is not being read (it allows twice this).",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Proxies trusted to set X-Forwarded-For and X-Forwarded-Proto "
        "(comma-separated addresses or networks, `*` for any); none: every client is who "
        "its TCP address says.",
    )
    shutdown_timeout: PositiveSeconds = Field(
        5.0,
        description="On SIGTERM, how long players get to receive their close (1012) before "
        "the rest is shut down, seconds.",
    )

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            if address != "*":
                try:
                    ipaddress.ip_network(address, strict=False)
                except ValueError:
                    raise ValueError(f"not an address or network: {address!r}") from None
        return addresses
