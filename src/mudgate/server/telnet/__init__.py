"""Telnet for classic MUD clients (Mudlet, TinTin++, MUSHclient, plain telnet).

``parser`` reads the telnet stream without I/O; ``options`` negotiates the MUD protocols (GMCP,
MCCP2, MTTS, NAWS, CHARSET, EOR, MSSP); ``lines`` turns a typed line into a command frame;
``protocol`` is a connection, from its login to its play; ``TelnetListener`` listens on
``MUDGATE_TELNET_PORT``.
"""

from __future__ import annotations

import asyncio
import logging

from ...settings import Settings
from .protocol import TelnetEvent, TelnetProtocol, TelnetService, TelnetStats, telnet_socket

__all__ = ["TelnetEvent", "TelnetListener", "TelnetProtocol", "TelnetService", "TelnetStats"]

logger = logging.getLogger("mudgate.telnet")


class TelnetListener:
    """The telnet port of one gateway: ``start`` listens, ``stop_accepting`` stops taking
    players (those still logging in are told and closed), ``close`` stops listening. The
    players themselves leave through the hub, as every player does."""

    def __init__(self, service: TelnetService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, *, reuse_port: bool = False) -> tuple[str, int]:
        sock = telnet_socket(self.settings, reuse_port=reuse_port)
        self._server = await asyncio.get_running_loop().create_server(self.service, sock=sock)
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        logger.info(f"telnet on {host}:{port}", extra={"host": host, "telnet_port": port})
        return self.address

    def stop_accepting(self, reason: str = "The server is restarting: come back soon.") -> None:
        if self._server is not None:
            self._server.close()
        self.service.close_logins(reason)

    async def close(self) -> None:
        self.stop_accepting()
        self._server = None

    def stats(self) -> TelnetStats:
        return self.service.stats()
