"""The tt++ harness against a small MUD of the test's own: what a telnet test can rely on."""

from __future__ import annotations

import asyncio
import json
import os
import re
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ..redis_server import free_port
from .tintin import run_tintin

IAC, DONT, DO, WONT, WILL, SB, GA, SE = 255, 254, 253, 252, 251, 250, 249, 240
TTYPE, NAWS, MCCP2, GMCP = 24, 31, 86, 201
TTYPE_SEND = 1
# IAC WILL/WONT/DO/DONT <option>, or IAC SB <option> <data> IAC SE.
SEQUENCE = re.compile(rb"\xff(?:([\xfb-\xfe])(.)|\xfa(.)(.*?)\xff\xf0)", re.DOTALL)
TRICKY_TEXT = 'a; {b} \\ "$c" %1 café'


def gmcp(package: str, data: object) -> bytes:
    return bytes([IAC, SB, GMCP]) + f"{package} {json.dumps(data)}".encode() + bytes([IAC, SE])


class FakeMud:
    """A MUD that offers GMCP and MCCP2, asks for NAWS and for TTYPE until the answer repeats
    (the MTTS cycle), then asks a name and echoes what is said; ``quit`` closes the connection.
    It serves one player at a time and keeps what the client sent."""

    def __init__(self) -> None:
        self.port = 0
        self.negotiations: list[tuple[int, int]] = []
        self.subnegotiations: list[tuple[int, bytes]] = []
        self.lines: list[str] = []
        self.compressed_bytes = 0
        self._writer: asyncio.StreamWriter | None = None
        self._compressor: Any = None

    async def __aenter__(self) -> FakeMud:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def subnegotiation(self, option: int) -> list[bytes]:
        return [data for sent, data in self.subnegotiations if sent == option]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer, self._compressor = writer, None
        self._send(bytes([IAC, WILL, GMCP, IAC, WILL, MCCP2, IAC, DO, TTYPE, IAC, DO, NAWS]))
        pending = text = b""
        try:
            while data := await reader.read(4096):
                pending += data
                while (at := pending.find(b"\xff")) >= 0 and (
                    sequence := SEQUENCE.match(pending, at)
                ):
                    text += pending[:at]
                    pending = pending[sequence.end() :]
                    self._negotiate(*sequence.groups())
                if at < 0:
                    text, pending = text + pending, b""
                *lines, text = text.split(b"\r\n")
                for line in lines:
                    if not self._answer(line.decode()):
                        return
        finally:
            writer.close()

    def _send(self, data: bytes) -> None:
        assert self._writer is not None
        if self._compressor is not None:
            data = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
            self.compressed_bytes += len(data)
        self._writer.write(data)

    def _negotiate(
        self, command: bytes | None, option: bytes, sub_option: bytes, sub_data: bytes
    ) -> None:
        if command is None:
            self.subnegotiations.append((sub_option[0], sub_data))
            if sub_option[0] == TTYPE:
                # The MTTS cycle: ask until the answer repeats, then greet.
                answers = self.subnegotiation(TTYPE)
                if len(answers) < 2 or answers[-1] != answers[-2]:
                    self._send(bytes([IAC, SB, TTYPE, TTYPE_SEND, IAC, SE]))
                else:
                    self._send(b"What is your name? " + bytes([IAC, GA]))
            return
        self.negotiations.append((command[0], option[0]))
        if (command[0], option[0]) == (DO, MCCP2):
            self._send(bytes([IAC, SB, MCCP2, IAC, SE]))
            self._compressor = zlib.compressobj()
        elif (command[0], option[0]) == (WILL, TTYPE):
            self._send(bytes([IAC, SB, TTYPE, TTYPE_SEND, IAC, SE]))

    def _answer(self, line: str) -> bool:
        """Answer what the player typed; False to close the connection."""
        self.lines.append(line)
        if len(self.lines) == 1:
            self._send(f"Welcome, \x1b[1;32m{line}\x1b[0m.\r\n".encode())
            self._send(gmcp("Room.Info", {"name": "lobby"}))
            self._send(gmcp("Comm.Channel.Text", {"text": TRICKY_TEXT}))
        elif line == "quit":
            self._send(b"Bye!\r\n")
            return False
        else:
            self._send(f"You say: {line}\r\n".encode())
        self._send(b"> " + bytes([IAC, GA]))
        return True


@pytest.fixture
async def mud() -> AsyncIterator[FakeMud]:
    async with FakeMud() as mud:
        yield mud


def running_tintins() -> list[int]:
    """The tt++ processes this test process started that still exist (zombies included)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            pid, rest = stat.read_text().split(" (", 1)
        except OSError:  # the process ended while we looked
            continue
        command, fields = rest.rsplit(") ", 1)
        if command == "tt++" and int(fields.split()[1]) == os.getpid():
            children.append(int(pid))
    return children


LOG_IN_AND_TALK = r"""
#action {What is your name?} {alice}
#action {Welcome, alice.} {gmcp Core.Hello {"client":"tintin"}; say hello}
#action {You say: say hello} {done}
"""


async def test_logs_in_talks_and_receives_gmcp_over_mccp2(mud: FakeMud) -> None:
    run = await run_tintin("127.0.0.1", mud.port, LOG_IN_AND_TALK, timeout=10)

    assert run.text == "What is your name? \nWelcome, alice.\n> \nYou say: say hello\n"
    assert run.gmcp_data("Room.Info") == [{"name": "lobby"}]
    assert run.gmcp_data("Comm.Channel.Text") == [{"text": TRICKY_TEXT}]
    assert run.mccp2 is True
    assert not run.disconnected
    assert mud.lines == ["alice", "say hello"]
    assert mud.subnegotiation(GMCP) == [b'Core.Hello {"client":"tintin"}']
    assert mud.compressed_bytes > 0


async def test_answers_the_negotiation_as_an_mtts_client(mud: FakeMud) -> None:
    await run_tintin("127.0.0.1", mud.port, LOG_IN_AND_TALK, timeout=10)

    assert mud.negotiations == [(DO, GMCP), (DO, MCCP2), (WILL, TTYPE), (WILL, NAWS)]
    # 80 columns, 24 rows: tt++'s screen when it has no terminal.
    assert mud.subnegotiation(NAWS) == [bytes([0, 80, 0, 24])]
    # MTTS 271: ANSI (1), VT100 (2), UTF-8 (4), 256 colours (8), true colour (256).
    assert mud.subnegotiation(TTYPE) == [
        b"\x00TINTIN++",
        b"\x00xterm-256color",
        b"\x00MTTS 271",
        b"\x00MTTS 271",
    ]


async def test_mccp_off_refuses_compression(mud: FakeMud) -> None:
    run = await run_tintin("127.0.0.1", mud.port, "#config {mccp} {off}" + LOG_IN_AND_TALK)

    assert run.mccp2 is False
    assert (DONT, MCCP2) in mud.negotiations
    assert mud.compressed_bytes == 0
    assert "You say: say hello" in run.text


async def test_unevent_restores_the_refusal_of_gmcp(mud: FakeMud) -> None:
    run = await run_tintin("127.0.0.1", mud.port, "#unevent {IAC WILL GMCP}" + LOG_IN_AND_TALK)

    assert (DONT, GMCP) in mud.negotiations
    # tt++ still reads what a server sends unasked.
    assert run.gmcp_data("Room.Info") == [{"name": "lobby"}]


async def test_the_server_closing_the_connection_ends_the_run(mud: FakeMud) -> None:
    script = "#action {What is your name?} {alice}\n#action {Welcome, alice.} {quit}"

    run = await run_tintin("127.0.0.1", mud.port, script, timeout=10)

    assert run.disconnected
    assert run.mccp2 is None
    assert run.text.endswith("Bye!\n")


async def test_a_refused_connection_raises() -> None:
    with pytest.raises(ConnectionRefusedError):
        await run_tintin("127.0.0.1", free_port(), "done", timeout=10)


async def test_a_run_past_its_timeout_is_killed(mud: FakeMud) -> None:
    with pytest.raises(TimeoutError, match="end the script with `done`"):
        await run_tintin("127.0.0.1", mud.port, "#action {What is your name?} {alice}", timeout=1)

    assert running_tintins() == []


async def test_a_cancelled_run_kills_tintin(mud: FakeMud) -> None:
    script = "#action {What is your name?} {alice}"
    run = asyncio.create_task(run_tintin("127.0.0.1", mud.port, script, timeout=10))
    while not mud.lines:
        await asyncio.sleep(0.01)

    run.cancel()

    with pytest.raises(asyncio.CancelledError):
        await run
    assert running_tintins() == []
