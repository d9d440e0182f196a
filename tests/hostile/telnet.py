"""Speaking telnet by hand to a real ``mudgate serve``: a client that reads the stream as a MUD
client does (IAC sequences taken out, MCCP2 undone), a healthy telnet player who must be
served throughout, and the telnet floods of tests/hostile/test_telnet.py.

Each flood comes from loopback, is bounded in volume or time, and returns what the server
answered: the text it sent (telnet taken out), the bytes it put on the wire, and whether it
closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from .gateway import Gateway, Healthy, open_connection

IAC, SB, SE, GA, NOP, EOR = 255, 250, 240, 249, 241, 239
WILL, WONT, DO, DONT = 251, 252, 253, 254
ECHO, SGA, TTYPE, NAWS, CHARSET, MSSP, MCCP2, GMCP = 1, 3, 24, 31, 42, 70, 86, 201
VERBS = (WILL, WONT, DO, DONT)

NAME_PROMPT = b"What is your name"


def telnet_port(server: Gateway) -> int:
    """The port the server took for telnet (started with ``telnet_port=0``: it logs it)."""
    for record in server.records():
        if "telnet_port" in record:
            return int(record["telnet_port"])
    raise AssertionError(f"the server did not log its telnet port:\n{server.logs()}")


def telnet_events(server: Gateway) -> dict[str, int]:
    """What the telnet layer refused or ended, as ``/monitoring/memory`` counts it."""
    events: dict[str, int] = server.memory()["telnet"]["events"]
    return events


def negotiation(verb: int, option: int) -> bytes:
    return bytes((IAC, verb, option))


def subnegotiation(option: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, option)) + payload.replace(b"\xff", b"\xff\xff") + bytes((IAC, SE))


def naws(width: int, height: int) -> bytes:
    return subnegotiation(NAWS, width.to_bytes(2, "big") + height.to_bytes(2, "big"))


# Reading what the server sends


class TelnetClient:
    """A raw telnet connection that reads everything the server sends, as a MUD client does:
    ``text`` is what it showed (IAC IAC undone, negotiations, subnegotiations and commands
    taken out, MCCP2 decompressed), ``negotiations`` the server's (verb, option) in order,
    ``subnegotiations`` its (option, payload), ``received`` the bytes it put on the wire,
    ``compressions`` how many times it started MCCP2. ``answer``, if given, is called with
    each negotiation and what it returns is sent back (a client that negotiates)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answer: Callable[[int, int], bytes] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.answer = answer
        self.text = bytearray()
        self.negotiations: list[tuple[int, int]] = []
        self.subnegotiations: list[tuple[int, bytes]] = []
        self.received = 0
        self.compressions = 0
        self.reset = False  # ended by a reset rather than an orderly close
        self._plain = b""  # received, decompressed, not parsed yet (an IAC sequence split)
        self._inflate: Any = None
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        rcvbuf: int | None = None,
        answer: Callable[[int, int], bytes] | None = None,
    ) -> TelnetClient:
        reader, writer = await open_connection(port, rcvbuf=rcvbuf)
        return cls(reader, writer, answer)

    @property
    def closed(self) -> bool:
        """Whether the server ended the connection."""
        return self._task.done()

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.received += len(data)
                self._feed(data)
                self._arrived.set()
        except ConnectionError:
            self.reset = True
        finally:
            self._arrived.set()

    def _feed(self, raw: bytes) -> None:
        while raw:
            if self._inflate is None:
                raw = self._parse(raw)
                continue
            self._parse(self._inflate.decompress(raw))
            if not self._inflate.eof:
                return
            # The server ended compression (Z_FINISH): what follows is plain again.
            raw, self._inflate = self._inflate.unused_data, None

    def _parse(self, data: bytes) -> bytes:
        """Parse plain telnet; the bytes after an MCCP2 start, which are compressed."""
        buffer = self._plain + data
        i, end = 0, len(buffer)
        while i < end:
            found = buffer.find(b"\xff", i)
            if found < 0:
                self.text += buffer[i:]
                i = end
                break
            self.text += buffer[i:found]
            i = found
            if i + 1 >= end:
                break
            code = buffer[i + 1]
            if code == IAC:
                self.text += b"\xff"
                i += 2
            elif code in VERBS:
                if i + 2 >= end:
                    break
                self._negotiated(code, buffer[i + 2])
                i += 3
            elif code == SB:
                stop = self._subnegotiation_end(buffer, i + 3)
                if stop < 0 or i + 2 >= end:
                    break
                option, payload = buffer[i + 2], buffer[i + 3 : stop].replace(b"\xff\xff", b"\xff")
                self.subnegotiations.append((option, payload))
                i = stop + 2
                if option == MCCP2:
                    self.compressions += 1
                    self._plain = b""
                    self._inflate = zlib.decompressobj()
                    return buffer[i:]
            else:
                i += 2  # GA, EOR, NOP: nothing to show
        self._plain = buffer[i:]
        return b""

    @staticmethod
    def _subnegotiation_end(buffer: bytes, start: int) -> int:
        """Where the IAC SE ending a subnegotiation starts; -1 if it has not arrived."""
        k = start
        while (k := buffer.find(b"\xff", k)) >= 0 and k + 1 < len(buffer):
            if buffer[k + 1] == SE:
                return k
            k += 2
        return -1

    def _negotiated(self, verb: int, option: int) -> None:
        self.negotiations.append((verb, option))
        if self.answer is not None and not self.writer.is_closing():
            self.writer.write(self.answer(verb, option))

    # What the test does with it

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """The text up to and including ``needle``, taken out of ``text``."""
        async with asyncio.timeout(timeout):
            while (found := self.text.find(needle)) < 0:
                if self.closed:
                    raise EOFError(f"closed before {needle!r}; sent {bytes(self.text[-300:])!r}")
                self._arrived.clear()
                await self._arrived.wait()
        taken = bytes(self.text[: found + len(needle)])
        del self.text[: found + len(needle)]
        return taken

    async def ended(self, timeout: float = 10.0) -> bytes:
        """Wait until the server ends the connection: everything it showed."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._task)
        return bytes(self.text)

    def abort(self) -> None:
        self.writer.transport.abort()
        self._task.cancel()


async def signed_in(port: int, name: bytes = b"guest", **options: Any) -> TelnetClient:
    """A telnet player past the login (``name``: guest, or a token pasted at the prompt)."""
    client = await TelnetClient.open(port, **options)
    await client.read_until(NAME_PROMPT)
    await client.send(name + b"\r\n")
    await client.read_until(b"Welcome")
    await client.read_until(b"\r\n")  # the rest of the welcome
    return client


# A healthy telnet player


class HealthyTelnet:
    """A guest who says a line every ``interval`` while an attack runs: each must come back
    ("says: hi N"), and the round trips are kept for the record. Five a second is under the
    default per-player rate."""

    def __init__(self, port: int, interval: float = 0.2) -> None:
        self.port = port
        self.interval = interval
        self.round_trips: list[float] = []
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> HealthyTelnet:
        self.client = await signed_in(self.port)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        sequence = 0
        while not self._stopping:
            sequence += 1
            started = time.perf_counter()
            try:
                await self.client.send(b"say hi %d\r\n" % sequence)
                await self.client.read_until(b"says: hi %d\r\n" % sequence, timeout=10)
            except Exception as error:  # recorded; assert_served() fails the test
                self.failures.append(repr(error))
                return
            self.round_trips.append(time.perf_counter() - started)
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._stopping = True
        await asyncio.wait_for(self._task, timeout=15)
        self.client.abort()

    def assert_served(self) -> None:
        assert not self.failures, self.failures
        assert self.round_trips, "the healthy telnet player was never answered"


@asynccontextmanager
async def healthy_players(server: Gateway) -> AsyncIterator[tuple[Healthy, HealthyTelnet]]:
    """A WebSocket player and a telnet player, both served while the block runs; each
    asserted served after it."""
    async with Healthy(server) as websocket, HealthyTelnet(telnet_port(server)) as telnet:
        yield websocket, telnet
    websocket.assert_served()
    telnet.assert_served()


# The floods


async def flood(
    port: int,
    opening: bytes,
    chunk: bytes,
    *,
    clients: int = 1,
    most_bytes: int = 4 * 1024 * 1024,
    answer: Callable[[int, int], bytes] | None = None,
    then: bytes = b"",
) -> list[TelnetClient]:
    """Each of ``clients`` sends ``opening``, then ``chunk`` again and again until the server
    ends the connection or ``most_bytes`` went, then ``then``; each reads everything the
    server sends meanwhile (and answers its negotiations with ``answer``). The clients, once
    the server ended each (TimeoutError if it did not)."""

    async def attack() -> TelnetClient:
        client = await TelnetClient.open(port, answer=answer)
        try:
            client.write(opening)
            sent = len(opening)
            while sent < most_bytes and not client.closed:
                await client.send(chunk)
                sent += len(chunk)
                # Read as it sends: a write that finds the connection reset ends the client
                # before it reads what was sent to it (the reason, in a line).
                await asyncio.sleep(0)
            if then and not client.closed:
                await client.send(then)
        except ConnectionError:
            pass  # closed by the server: the point
        try:
            await client.ended()
        finally:
            client.abort()
        return client

    return list(await asyncio.gather(*(attack() for _ in range(clients))))


@asynccontextmanager
async def held_lines(
    port: int, names: list[bytes], *, size: int
) -> AsyncIterator[list[TelnetClient]]:
    """A player signed in as each of ``names`` types ``size`` bytes of a line and never ends
    it; held while the block runs."""
    async with AsyncExitStack() as stack:
        held = []
        for name in names:
            client = await signed_in(port, name)
            stack.callback(client.abort)
            await client.send(b"n" * size)
            held.append(client)
        yield held


@asynccontextmanager
async def silent_logins(port: int, *, count: int) -> AsyncIterator[list[TelnetClient]]:
    """``count`` telnet connections that read but never type, open while the block runs."""
    async with AsyncExitStack() as stack:
        silent = []
        for _ in range(count):
            client = await TelnetClient.open(port)
            stack.callback(client.abort)
            silent.append(client)
        yield silent


async def unread_lines(
    port: int, line: bytes, *, clients: int, seconds: float = 2.0, names: list[bytes] | None = None
) -> int:
    """Each of ``clients`` (past the login as ``names``, if given) sends ``line`` as fast as
    the server reads for ``seconds`` and never reads a byte of the answers: the bytes they
    sent."""

    async def attack(name: bytes | None) -> int:
        reader, writer = await open_connection(port, rcvbuf=4096)
        try:
            if name is not None:
                await reader.readuntil(NAME_PROMPT)
                writer.write(name + b"\r\n")
                await reader.readuntil(b"Welcome")
            writer.transport.pause_reading()  # from here on, nothing more is read
            burst, sent = line * (65536 // len(line)), 0
            # Until the time is up, or the server closes it (for the flood itself).
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(seconds):
                    while True:
                        writer.write(burst)
                        await writer.drain()  # until the server stops reading
                        sent += len(burst)
            return sent
        finally:
            writer.transport.abort()

    every = names if names is not None else [None] * clients
    return sum(await asyncio.gather(*(attack(name) for name in every)))


@asynccontextmanager
async def compressed_unread(
    server: Gateway, port: int, *, players: int, name: str = "squeezed"
) -> AsyncIterator[None]:
    """``players`` telnet players who sign in, ask for MCCP2 and never read a byte of the
    compressed stream (each holds a zlib state, and fills its buffers from whatever its room
    hears); held while the block runs."""
    async with AsyncExitStack() as stack:
        for number in range(players):
            reader, writer = await open_connection(port, rcvbuf=4096)
            stack.callback(writer.close)  # (and so keeps the writer until then)
            stack.callback(writer.transport.abort)
            token = server.token(f"{name}{number}").encode()
            await reader.readuntil(NAME_PROMPT)
            writer.write(token + b"\r\n" + negotiation(DO, MCCP2))
            # Compressed from here on: the welcome too.
            await reader.readuntil(subnegotiation(MCCP2, b""))
            writer.transport.pause_reading()
        yield
