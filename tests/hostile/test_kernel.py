"""What the kernel holds on the server's behalf is bounded too: SSE streams that never read,
while their room is flooded."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable

from ..e2e.clients import Player
from .floods import open_stream
from .gateway import Gateway, poll

SEND_BUFFER = 16384


def server_send_queues(port: int) -> list[tuple[int, int]]:
    """(bytes queued to send, send buffer size) of every server-side socket on ``port``."""
    output = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # skmem:(r<rmem>,rb<rcvbuf>,t<wmem>,tb<sndbuf>,f<forward>,w<queued>,...)
    return [
        (int(queued), int(size))
        for size, queued in re.findall(r"skmem:\(r\d+,rb\d+,t\d+,tb(\d+),f\d+,w(\d+)", output)
    ]


async def test_streams_that_never_read_hold_at_most_their_send_buffer(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(
        socket_send_buffer_bytes=SEND_BUFFER,
        write_timeout=2,
        player_messages_per_second=100000,
        player_message_burst=100000,
    )
    before = server.rss_mb()
    streams = [open_stream(server.port, server.token(f"reader{i}")) for i in range(100)]
    try:
        await poll(lambda: server.memory()["connections"]["active_sse"] == 100)
        worst = 0
        async with await Player.connect(server.ws("flooder")) as flooder:
            await flooder.next("welcome")
            for _ in range(300):
                await flooder.send(op="say", text="x" * 3000)
            for queued, size in await asyncio.to_thread(server_send_queues, server.port):
                # The kernel allows twice SO_SNDBUF, for its own bookkeeping.
                assert size <= 2 * SEND_BUFFER
                worst = max(worst, queued)
            # Readers that never read are closed as slow consumers (write_timeout).
            await poll(lambda: server.memory()["connections"]["active_sse"] == 0, timeout=20)
        assert 0 < worst <= 2 * SEND_BUFFER + 65536  # + one write the kernel took whole
        assert server.rss_mb() - before < 30
    finally:
        for stream in streams:
            stream.close()
