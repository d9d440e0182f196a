"""The telnet listener, for classic MUD clients (docs/telnet.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from .types import PositiveInt, PositiveSeconds

Port = Annotated[int, Field(ge=0, le=65535)]


class Telnet(BaseModel):
    """Telnet for MUD clients (Mudlet, TinTin++, MUSHclient, plain telnet): its port, the name
    it gives crawlers, and the bounds on what a telnet client can make the server hold."""

    telnet_port: Port | None = Field(
        None,
        description="Serve telnet on this port (on `MUDGATE_HOST`) beside HTTP; unset: no "
        "telnet. `make run` opens 54732. 0 picks a free port (logged).",
    )
    telnet_name: str = Field(
        "mudgate",
        max_length=64,
        description="The game's name as telnet shows it: the login banner and MSSP's NAME "
        "for MUD crawlers.",
    )
    telnet_login_timeout: PositiveSeconds = Field(
        60.0,
        description="Seconds a telnet client has from connecting to entering the game (name, "
        "password); past them it is told so and closed.",
    )
    telnet_max_subnegotiation_bytes: PositiveInt = Field(
        8 * 1024,
        description="The longest telnet subnegotiation (a GMCP message, a terminal type) a "
        "client may send; a longer one closes the connection with a message.",
    )
    telnet_mccp_window_bits: Annotated[int, Field(ge=9, le=15)] = Field(
        10,
        description="zlib window of MCCP2 compression (9-15): it holds 2**(bits+2) bytes per "
        "compressed connection. zlib's default, 15, holds 128 KiB.",
    )
    telnet_mccp_mem_level: Annotated[int, Field(ge=1, le=9)] = Field(
        1,
        description="zlib memLevel of MCCP2 compression (1-9): it holds 2**(memLevel+9) bytes "
        "per compressed connection. zlib's default, 8, holds 128 KiB.",
    )
    telnet_max_compressed: Annotated[int, Field(ge=0)] = Field(
        1000,
        description="Telnet connections that may be compressed (MCCP2) at once; past it MCCP2 "
        "is not offered (and declined if asked), counted in the memory budget at its "
        "measured cost.",
    )
    telnet_renderers: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`MODULE:ATTR` of a `mudgate.Renderers`: how a game's events look to "
        "telnet players (and to web MUD clients on `/ws`'s `gmcp.mudstandards.org`) when the "
        "game runs in a process of its own (a game in the gateway's process brings its own, "
        "`game.render`).",
    )
    telnet_command_limit: PositiveInt = Field(
        100,
        description="Telnet commands, negotiations and subnegotiations (NAWS, GMCP but commands) "
        "a client may send a `MUDGATE_CONTROL_FRAME_WINDOW`; past it the connection is closed "
        "with a message. A client's handshake takes about 15.",
    )
