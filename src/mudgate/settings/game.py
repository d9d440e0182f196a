"""The game in a process of its own (``mudgate serve --game``) and its link to the gateway
(docs/game-link.md)."""

from __future__ import annotations

import ipaddress
import re
from typing import Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from .types import PositiveInt, PositiveSeconds

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TCP = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:\[\]]+):(?P<port>\d{1,5})$")


def link_address(value: str) -> tuple[str, int] | str:
    """A link address as (host, port) for loopback TCP, or a Unix socket's path."""
    match = _TCP.match(value)
    if match is None:
        return value
    return match["host"].strip("[]"), int(match["port"])


class GameProcess(BaseModel):
    """The game's process and the bounded link between it and the gateway."""

    game: str | None = Field(
        None,
        description="`MODULE:ATTR` of a `mudgate.Game` to run in a process of its own (as "
        "`mudgate serve --game`); SIGHUP starts a fresh one and retires the old.",
    )
    game_reload: bool = Field(
        False,
        description="Start a fresh game process whenever a source file of the game's package "
        "changes (`--reload`; for development).",
    )
    game_link: str | None = Field(
        None,
        description="Where the gateway listens for its game: a Unix socket's path, or a "
        "loopback `127.0.0.1:PORT` (default with `game`: a private Unix socket). Set it without "
        "`game` to attach a game you start yourself (any language: docs/game-link.md).",
    )
    game_token: SecretStr | None = Field(
        None,
        description="The secret a game presents in its `hello` (default with `game`: a random "
        "one handed to the child); required with `game_link` alone.",
    )
    game_queue_per_player: PositiveInt = Field(
        16,
        description="A player's commands waiting for the game (restarting, or still answering "
        "them); past it: `rate_limited`, or `game_unavailable` while it is away.",
    )
    game_queue_bytes: PositiveInt = Field(
        1024 * 1024,
        description="Bytes of commands and events waiting for the game, all players together; "
        "past it a command gets `game_unavailable`.",
    )
    game_queue_seconds: PositiveSeconds = Field(
        15.0,
        description="Longest a command waits for the game's answer; then `game_unavailable`.",
    )
    game_link_buffer_bytes: PositiveInt = Field(
        4 * 1024 * 1024,
        description="Bytes written to the game and not yet read by it; past it the game is a "
        "slow consumer: its link is closed (and, with `game`, a fresh process started).",
    )
    game_link_max_frame_bytes: PositiveInt = Field(
        1024 * 1024, description="Largest frame the game may send over its link, bytes."
    )
    game_start_timeout: PositiveSeconds = Field(
        30.0,
        description="How long a new game process has to attach and say `ready`, seconds.",
    )
    max_player_state_bytes: PositiveInt = Field(
        4096,
        description="Bytes (as JSON) of the per-player state a game keeps in the gateway "
        "(`hub.save_state`), which survives the game's restarts.",
    )

    @field_validator("game")
    @classmethod
    def _check_game(cls, spec: str | None) -> str | None:
        if spec is not None and not _SPEC.match(spec):
            raise ValueError(f"{spec!r} is not MODULE:ATTR, e.g. examples.castle.game:game")
        return spec

    @field_validator("game_link")
    @classmethod
    def _check_link(cls, value: str | None) -> str | None:
        if not value:
            return None
        address = link_address(value)
        if isinstance(address, tuple):
            host, port = address
            try:
                loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback or not 0 < port < 65536:
                raise ValueError(
                    f"{value!r}: the game link listens on loopback only (127.0.0.1:PORT or "
                    "[::1]:PORT), or on a Unix socket's path"
                )
        return value

    @model_validator(mode="after")
    def _check_link_workers(self) -> Self:
        if self.game_link is not None and getattr(self, "workers", 1) > 1:
            raise ValueError(
                "MUDGATE_GAME_LINK with MUDGATE_WORKERS > 1: every worker would listen at the "
                "same address; with --game leave MUDGATE_GAME_LINK unset (each worker's game "
                "gets a private socket of its own)"
            )
        return self

    @model_validator(mode="after")
    def _check_link_token(self) -> Self:
        if self.game_link is not None and self.game is None and self.game_token is None:
            raise ValueError(
                "MUDGATE_GAME_LINK without MUDGATE_GAME needs MUDGATE_GAME_TOKEN: the secret "
                "the game you start yourself presents in its hello"
            )
        return self
