"""Telnet for classic MUD clients: one ``TelnetProtocol`` per connection, all sharing one
``TelnetService``.

A connection is first a login (a name prompt; a password prompt with echo off when the game's
``authenticate`` hook takes credentials; ``guest``; or a mudgate token pasted at the prompt),
then a player: a ``Connection`` on the hub like any WebSocket's, whose task turns each typed
line into a command (``lines.frame_of``) and dispatches it through the command registry. What
the player is sent is rendered as text (``mudgate.render``), and as GMCP to a client that
agreed to it, once per event for everyone who gets it.

The same bounds hold as for the other transports, and telnet's own: a socket in the table
(evictable while it logs in), the login within ``telnet_login_timeout``, a line within
``max_message_bytes`` and a subnegotiation within ``telnet_max_subnegotiation_bytes`` (the
parser raises at the byte that crosses either), telnet commands and negotiations within
``control_frame_limit`` a ``control_frame_window``, reading paused while a line is handled or
the client does not read what it is sent, and MCCP2 compression with a small zlib state for at
most ``telnet_max_compressed`` connections at once. A client that crosses a bound is told
why, in a line, and closed; each is counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from ...auth import Authenticator, Credentials, Identity, TokenError
from ...bounded import LeakyBucket, SlidingWindowLimiter
from ...commands import CommandRegistry, answer_error
from ...connection import Connection, ConnectionLimits, ConnectionState
from ...hub import Hub
from ...protocol import CloseCode, CommandError, Outgoing
from ...render import Renderers, event_of, gmcp_of, strip_ansi
from ...settings import Settings
from ...transports import TelnetTransport
from ..flow import APP, Flow
from ..sockets import SocketKind, SocketTable
from .lines import LineError, answer_line_error, clean_line, command_of, quits, verbs_of
from .options import (
    LOCAL_OPTIONS,
    REMOTE_OPTIONS,
    TTYPE_IS,
    TTYPE_SEND,
    GmcpPackages,
    Mtts,
    Options,
    Side,
    charset_request,
    gmcp_message,
    mssp_payload,
    parse_charset_reply,
    parse_gmcp,
    parse_mtts,
    parse_naws,
)
from .parser import (
    Cmd,
    Command,
    Line,
    Negotiation,
    Opt,
    Subnegotiation,
    TelnetError,
    TelnetParser,
    Verb,
    command,
    negotiate,
    subnegotiation,
    text_bytes,
)

__all__ = ["TelnetEvent", "TelnetProtocol", "TelnetService", "TelnetStats"]

logger = logging.getLogger("mudgate.telnet")

# The longest line at the login prompts (a name, a password or a pasted token); a player's
# lines may be MUDGATE_MAX_MESSAGE_BYTES long.
LOGIN_LINE_BYTES = 1024
# Failed sign-ins one address may make a minute, whatever the connections.
SIGN_IN_FAILURES_PER_MINUTE = 10
# Most sign-in attempts one connection may make before it is closed.
MAX_LOGIN_ATTEMPTS = 3
# Terminal types a client may report before the server stops asking (MTTS asks three times).
MAX_TTYPE_ROUNDS = 3

_GOODBYE = {
    CloseCode.NORMAL: "Goodbye.",
    CloseCode.SLOW_CONSUMER: "Closed: you were not reading what the server sent.",
}


class TelnetEvent:
    """What the telnet layer refused or ended, counted for monitoring (the keys of
    ``TelnetStats.events``)."""

    LINE_TOO_LONG = "line_too_long"
    SUBNEGOTIATION_TOO_LONG = "subnegotiation_too_long"
    COMMAND_FLOOD = "command_flood"
    LOGIN_TIMEOUT = "login_timeout"
    LOGIN_FAILED = "login_failed"
    REFUSED = "refused"
    COMPRESSION_DECLINED = "compression_declined"
    BAD_GMCP = "bad_gmcp"

    ALL = (
        LINE_TOO_LONG,
        SUBNEGOTIATION_TOO_LONG,
        COMMAND_FLOOD,
        LOGIN_TIMEOUT,
        LOGIN_FAILED,
        REFUSED,
        COMPRESSION_DECLINED,
        BAD_GMCP,
    )


@dataclass(frozen=True, slots=True)
class TelnetStats:
    """The telnet listener as monitoring shows it."""

    logging_in: int
    compressed: int
    compressed_capacity: int
    events: dict[str, int]


class TelnetService:
    """What every telnet connection of one gateway shares: the parts it plays through, its
    limits, the compressed connections (capped) and the counters."""

    def __init__(
        self,
        *,
        settings: Settings,
        hub: Hub,
        commands: CommandRegistry,
        authenticator: Authenticator,
        sockets: SocketTable,
        renderers: Renderers,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.commands = commands
        self.authenticator = authenticator
        self.sockets = sockets
        self.renderers = renderers
        self.clock = clock
        self.started_at = int(wall_clock())
        self.limits = ConnectionLimits.from_settings(settings)
        self.logins: set[TelnetProtocol] = set()  # connected, not players yet
        self.compressed: set[TelnetProtocol] = set()
        self.events: Counter[str] = Counter()
        self.guests = SlidingWindowLimiter(
            settings.guest_tokens_per_minute, 60.0, settings.max_rate_limit_keys, clock=clock
        )
        # Failed sign-ins by address: a name and password can be guessed on many connections.
        self.failures = SlidingWindowLimiter(
            SIGN_IN_FAILURES_PER_MINUTE, 60.0, settings.max_rate_limit_keys, clock=clock
        )
        self.accepting = True

    def __call__(self) -> TelnetProtocol:
        """A protocol for a new connection (what ``loop.create_server`` calls)."""
        return TelnetProtocol(self)

    def stats(self) -> TelnetStats:
        return TelnetStats(
            logging_in=len(self.logins),
            compressed=len(self.compressed),
            compressed_capacity=self.settings.telnet_max_compressed,
            events={name: self.events[name] for name in TelnetEvent.ALL},
        )

    def may_compress(self) -> bool:
        return len(self.compressed) < self.settings.telnet_max_compressed

    def close_logins(self, reason: str) -> None:
        """Stop taking new players and close those still logging in (at shutdown)."""
        self.accepting = False
        for login in list(self.logins):
            login.refuse(reason)

    def verbs(self) -> dict[str, list[dict[str, Any]]]:
        """Each op the registry (and a linked game) answers, and its fields in order."""
        return verbs_of(self.commands.schema())


class _Login:
    """Where a connection is in its login."""

    NAME = "name"
    PASSWORD = "password"
    CHECKING = "checking"
    PLAYING = "playing"
    CLOSED = "closed"


class TelnetProtocol(asyncio.Protocol):
    """One telnet connection (see the module's docstring)."""

    def __init__(self, service: TelnetService) -> None:
        self.service = service
        settings = service.settings
        self.parser = TelnetParser(
            max_line_bytes=LOGIN_LINE_BYTES,
            max_subnegotiation_bytes=settings.telnet_max_subnegotiation_bytes,
        )
        self.options = Options(LOCAL_OPTIONS, REMOTE_OPTIONS)
        self.flow: Flow | None = None
        self.transport: asyncio.Transport | None = None
        self.remote = "-"
        self.login = _Login.NAME
        self.name: str | None = None
        self.attempts = 0
        self.conn: Connection | None = None
        self.task: asyncio.Task[None] | None = None
        self._commands = LeakyBucket()
        self._busy = False  # a line (or a GMCP command) is being handled: reading waits
        self._next: asyncio.Future[str | bytes | None] | None = None
        self._waiting: str | bytes | None = None
        self._ended = False  # closing or closed: the player's task ends
        self._compressor: Any = None  # zlib's compress object, once MCCP2 is on
        self._keepalive: asyncio.TimerHandle | None = None
        self._wrote = False
        # What the client told about itself.
        self.client: str | None = None
        self.terminal: str | None = None
        self.mtts: Mtts | None = None
        self.window: tuple[int, int] | None = None
        self.utf8 = True
        self._ttype_rounds = 0
        self._gmcp_packages = GmcpPackages()

    # The connection's life

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        service = self.service
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        if not service.accepting or not service.sockets.open(transport):
            service.events[TelnetEvent.REFUSED] += 1
            transport.write(text_bytes("The server is full; try again later.\n"))
            transport.close()
            return
        settings = service.settings
        transport.set_write_buffer_limits(high=settings.write_buffer_bytes)
        loop = asyncio.get_running_loop()
        self.flow = Flow(transport, service.sockets, loop, settings.write_timeout)
        service.logins.add(self)
        self.flow.arm(settings.telnet_login_timeout, self._login_timed_out)
        options = self.options
        offers = [
            options.ask(Side.LOCAL, Opt.GMCP),
            options.ask(Side.LOCAL, Opt.EOR),
            options.ask(Side.LOCAL, Opt.MSSP),
            options.ask(Side.LOCAL, Opt.CHARSET),
            options.ask(Side.REMOTE, Opt.TTYPE),
            options.ask(Side.REMOTE, Opt.NAWS),
        ]
        self._write(b"".join(offers))
        self._write(text_bytes(f"{settings.telnet_name}\n"))
        self._prompt("What is your name (or guest, or a token)? ")

    def connection_lost(self, exc: Exception | None) -> None:
        service = self.service
        service.logins.discard(self)
        service.compressed.discard(self)
        self.login = _Login.CLOSED
        self._stop_keepalive()
        if self.flow is not None:
            self.flow.lost()
        self._deliver(None)  # the player's task ends, which disconnects it from the hub

    def data_received(self, data: bytes) -> None:
        flow = self.flow
        if flow is None:
            return
        if flow.closing:
            flow.linger(data)
            return
        self.parser.receive_data(data)
        self._pump()

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_writing()
            self._pump()  # what waited in the parser while the client was not reading

    # Reading: one event at a time, none while a line is being handled

    def _pump(self) -> None:
        # Nothing is parsed while a line is handled, nor while the client does not read what
        # it is sent: a line may be answered (a prompt, an error), and a read's worth of lines
        # answered at once would be many times the write buffer.
        flow = self.flow
        while not self._busy and flow is not None and not flow.closing and not flow.write_paused:
            try:
                event = self.parser.next_event()
            except TelnetError as error:
                self.refuse(str(error), error.kind)
                return
            if event is None:
                return
            if isinstance(event, Line):
                self._line(event.data)
                continue
            # A command sent over GMCP is rate-limited as a command, not as telnet's own.
            command = isinstance(event, Subnegotiation) and _is_command(event)
            if not command and not self._charge():
                return
            if isinstance(event, Negotiation):
                self._negotiate(event)
            elif isinstance(event, Command):
                self._command(event.command)
            else:
                self._subnegotiate(event.option, event.payload)

    def _charge(self) -> bool:
        """Count one telnet command (or an empty name at the prompt); False, having closed
        the connection, past MUDGATE_TELNET_COMMAND_LIMIT a MUDGATE_CONTROL_FRAME_WINDOW."""
        settings = self.service.settings
        if self._commands.hit(
            self.service.clock(), settings.telnet_command_limit, settings.control_frame_window
        ):
            return True
        self.refuse("too many telnet commands", TelnetEvent.COMMAND_FLOOD)
        return False

    def _hold(self) -> None:
        """Stop reading until the line in hand is handled."""
        self._busy = True
        if self.flow is not None:
            self.flow.pause(APP)

    def _release(self) -> None:
        self._busy = False
        if self.flow is not None and not self.flow.closing:
            self.flow.resume(APP)
            self._pump()

    def _line(self, data: bytes) -> None:
        if self.login == _Login.PLAYING:
            line = clean_line(data)
            if line:
                self._hold()
                self._deliver(line)
            return
        if self.login == _Login.NAME:
            self._name_entered(clean_line(data))
        elif self.login == _Login.PASSWORD:
            self._password_entered(data.decode("utf-8", "replace").strip("\r\n\x00"))

    def _deliver(self, item: str | bytes | None) -> None:
        """Hand the player's task its next line (or frame); None: the connection is over."""
        if item is None:
            self._ended = True
        waiter, self._next = self._next, None
        if waiter is not None and not waiter.done():
            waiter.set_result(item)
        elif item is not None:
            self._waiting = item

    async def _take(self) -> str | bytes | None:
        if self._waiting is not None:
            item, self._waiting = self._waiting, None
            return item
        if self._ended:
            return None
        self._next = asyncio.get_running_loop().create_future()
        return await self._next

    # Login

    def _name_entered(self, name: str) -> None:
        if not name:
            if self._charge():
                self._prompt("What is your name (or guest, or a token)? ")
            return
        service = self.service
        service.failures.expire(limit=100)
        service.guests.expire(limit=100)
        if service.failures.retry_after(self.remote) > 0:
            self.refuse("Too many failed sign-ins from your address; try again in a minute.")
            return
        if service.hub.shedding:
            self.refuse("The server is too busy to sign you in; try again in a minute.")
            return
        if name.lower() == "guest":
            if not service.settings.allow_guests:
                self._failed("Guests are not allowed here.")
                return
            if not service.guests.hit(self.remote):
                self._failed("Too many guests from your address; try again in a minute.")
                return
            _, token = service.authenticator.issue_guest()
            self._check(Credentials(token))
        elif name.count(".") == 2 and len(name) > 40:  # a mudgate token, pasted
            self._check(Credentials(name))
        elif service.authenticator.asks_game:
            self.name = name
            self.login = _Login.PASSWORD
            self._write(self.options.ask(Side.LOCAL, Opt.ECHO))  # the client stops echoing
            self._prompt("Password: ")
        else:
            self._failed("This server signs players in with a token: paste yours, or type guest.")

    def _password_entered(self, password: str) -> None:
        self._write(self.options.ask(Side.LOCAL, Opt.ECHO, on=False) + b"\r\n")
        self._check(Credentials(None, name=self.name, password=password))

    def _check(self, credentials: Credentials) -> None:
        self.login = _Login.CHECKING
        self._hold()
        self.task = asyncio.get_running_loop().create_task(self._enter(credentials))

    def _failed(self, message: str) -> None:
        self.attempts += 1
        self.service.events[TelnetEvent.LOGIN_FAILED] += 1
        self.service.failures.hit(self.remote)
        if self.attempts >= MAX_LOGIN_ATTEMPTS:
            self.refuse(f"{message} Too many attempts.")
            return
        self.login = _Login.NAME
        self._write(text_bytes(message + "\n"))
        self._prompt("What is your name (or guest, or a token)? ")

    def _login_timed_out(self) -> None:
        self.refuse(
            f"You did not sign in within {self.service.settings.telnet_login_timeout:g} s.",
            TelnetEvent.LOGIN_TIMEOUT,
        )

    async def _enter(self, credentials: Credentials) -> None:
        """Sign in, then play until the connection ends."""
        service = self.service
        try:
            identity = await service.authenticator.identify(credentials)
        except Exception as error:
            if not isinstance(error, TokenError):
                logger.exception("telnet %s: the sign-in hook failed", self.remote)
                error = TokenError("the server could not check it")
            self.task = None
            if self.login == _Login.CHECKING:
                self._failed(f"Sign-in failed: {error}.")
                self._release()
            return
        if self.login != _Login.CHECKING or self.flow is None or self.flow.closing:
            return
        refusal = service.hub.admit(identity.player_id, self.remote)
        if refusal is not None:
            wait = refusal.retry_after_seconds
            self.refuse(f"Refused: {refusal.reason} (try again in {wait} s).")
            return
        await self._play(identity)

    async def _play(self, identity: Identity) -> None:
        service = self.service
        flow = self.flow
        assert flow is not None
        assert self.transport is not None
        conn = self.conn = Connection(
            identity.player_id,
            self.remote,
            service.limits,
            transport=TelnetTransport(self),
            handler=asyncio.current_task(),
            clock=service.clock,
        )
        service.logins.discard(self)
        flow.cancel_timer()
        service.sockets.mark(self.transport, SocketKind.TELNET)
        self.login = _Login.PLAYING
        self.parser.max_line_bytes = service.settings.max_message_bytes
        if service.may_compress():
            # Offered to players only: those signing in cannot take the compressed slots.
            self._write(self.options.ask(Side.LOCAL, Opt.MCCP2))
        try:
            async with service.hub.session(conn):
                self._start_keepalive()
                self._release()
                await self._serve(conn)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not conn.aborted or task is None:
                raise
            task.uncancel()
        finally:
            self.conn = None
            self.task = None
            if not flow.closing:
                flow.close()

    async def _serve(self, conn: Connection) -> None:
        while True:
            item = await self._take()
            if item is None:
                return
            if conn.state is ConnectionState.OPEN:
                conn.received()
                error = await self._run(conn, item)
                if error is not None:
                    answer_error(conn, error)
            await asyncio.sleep(0)  # let the writers this line woke run
            self._release()

    async def _run(self, conn: Connection, item: str | bytes) -> CommandError | None:
        service = self.service
        if isinstance(item, bytes):  # a frame sent over GMCP
            return await service.commands.dispatch(service.hub, conn, item)
        verbs = service.verbs()
        if quits(item, verbs):
            conn.close(CloseCode.NORMAL, "Goodbye.")
            return None
        try:
            raw = command_of(item, verbs)
        except LineError as error:
            answer_line_error(service.hub, conn, error)
            return None
        del item  # held once, as the frame, while the command runs
        return await service.commands.dispatch(service.hub, conn, raw)

    # Negotiation

    def _negotiate(self, event: Negotiation) -> None:
        option = event.option
        if option == Opt.MCCP2 and event.verb == Verb.DO and self._compressor is None:
            if self.login != _Login.PLAYING:
                self._write(negotiate(Verb.WONT, Opt.MCCP2))  # offered once signed in
                return
            if not self.service.may_compress():
                self.service.events[TelnetEvent.COMPRESSION_DECLINED] += 1
                self._write(negotiate(Verb.WONT, Opt.MCCP2))
                return
        change = self.options.receive(event.verb, option)
        if change.reply:
            self._write(change.reply)
        if change.enabled is None:
            return
        side, on = change.side, change.enabled
        if side is Side.LOCAL and option == Opt.MCCP2:
            self._compress(on)
        elif side is Side.LOCAL and option == Opt.MSSP and on:
            self._write(subnegotiation(Opt.MSSP, mssp_payload(self._mssp())))
        elif side is Side.LOCAL and option == Opt.CHARSET and on:
            self._write(subnegotiation(Opt.CHARSET, charset_request()))
        elif side is Side.LOCAL and option == Opt.ECHO and on and self.login != _Login.PASSWORD:
            self._write(self.options.ask(Side.LOCAL, Opt.ECHO, on=False))
        elif side is Side.REMOTE and option == Opt.TTYPE and on:
            self._ask_ttype()
        elif side is Side.REMOTE and option == Opt.CHARSET and on:
            self._write(subnegotiation(Opt.CHARSET, charset_request()))

    def _command(self, code: int) -> None:
        if code == Cmd.AYT:
            self._write(text_bytes("[yes]\n"))
        # NOP, GA, EOR, BRK, IP and the rest mean nothing to a MUD: read and dropped.

    def _subnegotiate(self, option: int, payload: bytes) -> None:
        if option == Opt.NAWS:
            self.window = parse_naws(payload) or self.window
        elif option == Opt.TTYPE and payload[:1] == bytes((TTYPE_IS,)):
            self._terminal_type(payload[1:65].decode("ascii", "replace"))
        elif option == Opt.CHARSET:
            accepted = parse_charset_reply(payload)
            if accepted is not None:
                self.utf8 = accepted
        elif option == Opt.GMCP and self.options.enabled(Side.LOCAL, Opt.GMCP):
            self._gmcp(payload)

    def _ask_ttype(self) -> None:
        self._ttype_rounds += 1
        self._write(subnegotiation(Opt.TTYPE, bytes((TTYPE_SEND,))))

    def _terminal_type(self, name: str) -> None:
        """MTTS: the first answer is the client, the second the terminal, the third "MTTS n";
        a client that repeats itself has no more to say."""
        mtts = parse_mtts(name)
        if mtts is not None:
            self.mtts = mtts
        elif self.client is None:
            self.client = name
        elif name not in (self.terminal, self.client):
            self.terminal = name
        else:
            return
        if mtts is None and self._ttype_rounds < MAX_TTYPE_ROUNDS:
            self._ask_ttype()

    def _mssp(self) -> dict[str, str]:
        service = self.service
        return {
            "NAME": service.settings.telnet_name,
            "PLAYERS": str(len(service.hub.registry.players)),
            "UPTIME": str(service.started_at),
            "CODEBASE": "mudgate",
            "CHARSET": "UTF-8",
            "UTF-8": "1",
            "ANSI": "1",
            "GMCP": "1",
            "MCCP": "1",
            "MSDP": "0",
        }

    def _gmcp(self, payload: bytes) -> None:
        try:
            package, data = parse_gmcp(payload)
        except ValueError as error:
            self.service.events[TelnetEvent.BAD_GMCP] += 1
            self.write_gmcp("Mudgate.Error", {"message": str(error)})
            return
        name = package.lower()
        if name == "core.hello" and isinstance(data, dict):
            client = data.get("client")
            if isinstance(client, str):
                self.client = client[:64]
        elif name.startswith("core.supports.") and isinstance(data, list):
            self._gmcp_packages.update(name.removeprefix("core.supports."), data)
        elif name == "core.ping":
            self.write_gmcp("Core.Ping", None)
        elif name == "mudgate.command":
            if self.login != _Login.PLAYING:
                self.write_gmcp("Mudgate.Error", {"message": "sign in first"})
            elif self._busy:
                # Reading stops while a line is handled, so this cannot happen twice.
                self.write_gmcp("Mudgate.Error", {"message": "one command at a time"})
            else:
                self._hold()
                self._deliver(msgspec.json.encode(data))

    # Writing

    def _write(self, data: bytes) -> None:
        flow = self.flow
        if not data or flow is None or flow.closing:
            return
        compressor = self._compressor
        if compressor is not None:
            data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._wrote = True
        flow.write(data)

    def _prompt(self, text: str) -> None:
        """A prompt, marked as one: IAC EOR where agreed, else IAC GA (unless the client
        asked us to suppress go-ahead)."""
        if self.options.enabled(Side.LOCAL, Opt.EOR):
            mark = command(Cmd.EOR)
        elif self.options.enabled(Side.LOCAL, Opt.SGA):
            mark = b""
        else:
            mark = command(Cmd.GA)
        self._write(text_bytes(text) + mark)

    def write_text(self, text: str) -> None:
        self._write(text_bytes(self._colour(text) + "\n"))

    def write_gmcp(self, package: str, data: object) -> None:
        if self.options.enabled(Side.LOCAL, Opt.GMCP):
            self._write(subnegotiation(Opt.GMCP, gmcp_message(package, data)))

    @property
    def plain(self) -> bool:
        """Whether the client cannot show colour: its MTTS says so, or its terminal is dumb."""
        mtts = self.mtts
        if mtts is not None:
            return not mtts & Mtts.ANSI
        return (self.terminal or self.client or "").lower() == "dumb"

    def _colour(self, text: str) -> str:
        return strip_ansi(text) if self.plain else text

    def _compress(self, on: bool) -> None:
        service = self.service
        if on and self._compressor is None:
            # Written uncompressed; everything after it is one zlib stream.
            self._write(subnegotiation(Opt.MCCP2, b""))
            settings = service.settings
            self._compressor = zlib.compressobj(
                6, zlib.DEFLATED, settings.telnet_mccp_window_bits, settings.telnet_mccp_mem_level
            )
            service.compressed.add(self)
        elif not on and self._compressor is not None:
            compressor, self._compressor = self._compressor, None
            if self.flow is not None and not self.flow.closing:
                self.flow.write(compressor.flush(zlib.Z_FINISH))
            service.compressed.discard(self)

    # TelnetSink: what the player's Connection writes through

    def write_event(self, message: Outgoing) -> bool:
        flow = self.flow
        if flow is None or flow.closing or flow.write_paused:
            return False
        if self.plain:
            data = message.view("telnet-plain", self._render_plain)
        else:
            data = message.view("telnet", self._render_ansi)
        if self.options.enabled(Side.LOCAL, Opt.GMCP):
            if "mudgate" in self._gmcp_packages:
                data += message.view("gmcp+mudgate", self._render_gmcp_all)
            else:
                data += message.view("gmcp", self._render_gmcp)
        self._write(data)
        return True

    # The views of an event, each built once for everyone who gets it (Outgoing.view).

    def _render_ansi(self, message: Outgoing) -> bytes:
        event = event_of(message.data)
        text = None if event is None else self.service.renderers.render(event)
        return b"" if text is None else text_bytes(text + "\n")

    def _render_plain(self, message: Outgoing) -> bytes:
        # The coloured view without its colour: rendered once for both.
        return strip_ansi(message.view("telnet", self._render_ansi).decode()).encode()

    def _render_gmcp(self, message: Outgoing, mudgate: bool = False) -> bytes:
        event = event_of(message.data)
        if event is None:
            return b""
        text = self.service.renderers.render(event)
        return b"".join(
            subnegotiation(Opt.GMCP, gmcp_message(package, data))
            for package, data in gmcp_of(event, text, whole=mudgate)
        )

    def _render_gmcp_all(self, message: Outgoing) -> bytes:
        return self._render_gmcp(message, mudgate=True)

    async def writable(self) -> None:
        if self.flow is not None:
            await self.flow.drain()

    def write_farewell(self, code: CloseCode, reason: str) -> None:
        """The connection is closed by the server: tell the player why, in a line."""
        if code is CloseCode.SERVICE_RESTART:
            window = self.service.settings.reconnect_window
            text = f"The server is restarting: reconnect within {window:g} s."
        else:
            text = _GOODBYE.get(code) or f"Closed: {reason}."
        self._write(text_bytes(f"\n{text}\n"))
        self._close()

    def release(self) -> None:
        self._stop_keepalive()

    def refuse(self, message: str, event: str | None = None) -> None:
        """Tell the client why, in a line, and close (counted under ``event``)."""
        if event is not None:
            self.service.events[event] += 1
            logger.info("telnet %s closed: %s", self.remote, message)
        self._write(text_bytes(f"\n{message}\n"))
        self.service.logins.discard(self)
        if self.conn is not None:
            self.conn.close(CloseCode.POLICY_VIOLATION, message)
        self._close()

    def _close(self) -> None:
        """Close once what is written has gone; the player leaves the hub at once."""
        self._compress(False)
        self.login = _Login.CLOSED if self.conn is None else self.login
        if self.flow is not None:
            self.flow.close()
        self._deliver(None)

    # Keep-alive: IAC NOP when nothing else was written for ping_interval, so that a client
    # that vanished is found (TCP_USER_TIMEOUT) as a WebSocket's ping finds it.

    def _start_keepalive(self) -> None:
        self._keepalive = asyncio.get_running_loop().call_later(
            self.service.settings.ping_interval, self._tick
        )

    def _tick(self) -> None:
        if self.flow is None or self.flow.closing:
            self._keepalive = None
            return
        if not self._wrote:
            self._write(command(Cmd.NOP))
        self._wrote = False
        self._start_keepalive()

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None


def _is_command(event: Subnegotiation) -> bool:
    return event.option == Opt.GMCP and event.payload[:16].lower() == b"mudgate.command "


def telnet_socket(settings: Settings, *, reuse_port: bool) -> socket.socket:
    """The telnet listening socket on ``host:telnet_port``, with the options every accepted
    socket inherits (kernel buffers and TCP_USER_TIMEOUT, as for HTTP)."""
    host, port = settings.host, settings.telnet_port or 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, settings.socket_receive_buffer_bytes)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(settings.ping_timeout * 1000)
            )
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
