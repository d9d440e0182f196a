"""A telnet client at the byte level, for the tests: it sends exactly what a test says, answers
the server's offers as told (GMCP, MCCP2, TTYPE, NAWS), inflates MCCP2, and keeps what it
received apart: the text (colour removed), every negotiation and every GMCP message.

Its parsing is written apart from mudgate's parser (a byte at a time, as the simplest client
would), so that the two check each other; TinTin++ (tintin.py) and telnetlib3 are the real
clients.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from typing import Any

IAC, SB, SE, WILL, WONT, DO, DONT, GA, EOR_CMD = 255, 250, 240, 251, 252, 253, 254, 249, 239
ECHO, TTYPE, EOR, NAWS, CHARSET, MSSP, MCCP2, GMCP = 1, 24, 25, 31, 42, 70, 86, 201
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TelnetClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        gmcp: bool,
        mccp: bool,
        ttype: list[str],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.want_gmcp = gmcp
        self.want_mccp = mccp
        self.ttypes = list(ttype)
        self.raw_text = ""  # with colour
        self.negotiations: list[tuple[int, int]] = []
        self.subnegotiations: list[tuple[int, bytes]] = []
        self.gmcp: list[tuple[str, Any]] = []
        self.commands: list[int] = []  # GA, EOR, NOP...
        self.compressed = False
        self.compressed_bytes = 0
        self.closed = False
        self._inflate: Any = None
        self._pending = b""
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        gmcp: bool = False,
        mccp: bool = False,
        ttype: list[str] | None = None,
        host: str = "127.0.0.1",
    ) -> TelnetClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, gmcp=gmcp, mccp=mccp, ttype=ttype or [])

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw_text)

    # Reading

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                if self._inflate is not None:
                    self.compressed_bytes += len(data)
                    data = self._inflate.decompress(data)
                self._feed(data)
                self._changed.set()
        except (ConnectionError, zlib.error):
            pass
        finally:
            self.closed = True
            self._changed.set()
            self.writer.close()  # as a client does once the server has closed

    def _feed(self, data: bytes) -> None:
        data = self._pending + data
        self._pending = b""
        text = bytearray()
        i = 0
        while i < len(data):
            byte = data[i]
            if byte != IAC:
                text.append(byte)
                i += 1
                continue
            if i + 1 >= len(data):
                self._pending = data[i:]
                break
            verb = data[i + 1]
            if verb == IAC:
                text.append(IAC)
                i += 2
            elif verb in (WILL, WONT, DO, DONT):
                if i + 2 >= len(data):
                    self._pending = data[i:]
                    break
                self._negotiated(verb, data[i + 2])
                i += 3
            elif verb == SB:
                end = data.find(bytes((IAC, SE)), i + 2)
                if end < 0:
                    self._pending = data[i:]
                    break
                option, payload = data[i + 2], data[i + 3 : end].replace(b"\xff\xff", b"\xff")
                i = end + 2
                self._subnegotiated(option, payload)
                if option == MCCP2:  # everything after it is one zlib stream
                    self.raw_text += text.decode("utf-8", "replace")
                    text.clear()
                    self.compressed = True
                    self._inflate = zlib.decompressobj()
                    rest = data[i:]
                    self.compressed_bytes += len(rest)
                    self._feed(self._inflate.decompress(rest))
                    return
            else:
                self.commands.append(verb)
                i += 2
        self.raw_text += text.decode("utf-8", "replace")

    def _negotiated(self, verb: int, option: int) -> None:
        self.negotiations.append((verb, option))
        if verb == WILL and option == GMCP:
            self.send(bytes((IAC, DO if self.want_gmcp else DONT, GMCP)))
        elif verb == WILL and option == MCCP2:
            self.send(bytes((IAC, DO if self.want_mccp else DONT, MCCP2)))
        elif verb == DO and option == TTYPE:
            self.send(bytes((IAC, WILL if self.ttypes else WONT, TTYPE)))
        elif verb == DO and option == NAWS:
            self.send(bytes((IAC, WILL, NAWS, IAC, SB, NAWS, 0, 100, 0, 40, IAC, SE)))

    def _subnegotiated(self, option: int, payload: bytes) -> None:
        self.subnegotiations.append((option, payload))
        if option == GMCP:
            package, _, data = payload.decode().partition(" ")
            self.gmcp.append((package, json.loads(data) if data else None))
        elif option == TTYPE and payload == b"\x01" and self.ttypes:
            name = self.ttypes.pop(0) if len(self.ttypes) > 1 else self.ttypes[0]
            self.send(bytes((IAC, SB, TTYPE, 0)) + name.encode() + bytes((IAC, SE)))

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever something arrives)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.closed:
                    raise ConnectionError(f"closed before the condition held; text: {self.text!r}")
                self._changed.clear()
                await self._changed.wait()

    async def expect(self, text: str, timeout: float = 5.0) -> None:
        """Wait until the text received (without colour) contains ``text``."""
        try:
            await self.until(lambda: text in self.text, timeout)
        except TimeoutError:
            raise AssertionError(f"{text!r} never came; received {self.text[-2000:]!r}") from None

    async def gmcp_message(self, package: str, timeout: float = 5.0) -> Any:
        """The data of the first GMCP message of ``package`` received."""
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = [data for name, data in self.gmcp if name == package][:1]
            return bool(found)

        await self.until(arrived, timeout)
        return found[0]

    async def wait_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self._task

    # Writing

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def line(self, text: str) -> None:
        self.send(text.encode() + b"\r\n")

    def send_gmcp(self, package: str, data: Any = None) -> None:
        payload = package.encode() + (b" " + json.dumps(data).encode() if data is not None else b"")
        self.send(bytes((IAC, SB, GMCP)) + payload.replace(b"\xff", b"\xff\xff") + bytes((IAC, SE)))

    async def login(self, name: str = "guest") -> str:
        """Sign in at the name prompt; the player id the server welcomed."""
        await self.expect("What is your name")
        self.line(name)
        await self.expect("Welcome, ")
        return self.text.split("Welcome, ", 1)[1].split(".", 1)[0]

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.wait_closed()
        except TimeoutError:
            self._task.cancel()
