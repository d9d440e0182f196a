"""A client that stops reading while its room is flooded costs the server its outbox, no more."""

from __future__ import annotations

import asyncio

from .clients import Player, raw_websocket, read_until_closed
from .server import RunningServer, wait_for

FLOOD_MESSAGES = 2500  # ~7.5 MB: well past the ~4 MB the kernel buffers before a send blocks
TEXT = "x" * 3000


async def test_a_stalled_client_is_closed_and_the_room_gets_everything(server_with: object) -> None:
    server: RunningServer = server_with(  # type: ignore[operator]
        write_timeout=1,
        ping_interval=60,
        ping_timeout=60,
        # The flooder is the test's instrument, not its subject (tests/hostile has that).
        player_messages_per_second=100000,
        player_message_burst=100000,
    )
    cap = server.settings.outbox_max_bytes
    stalled = raw_websocket(server.port, server.token("stalled"), rcvbuf=4096)
    flooder = await Player.connect(server.ws("flooder"))
    healthy = await Player.connect(server.ws("healthy"))
    await healthy.next("welcome")
    await wait_for(lambda: server.stats()["active_websockets"] == 3)

    largest_outbox = 0

    def outbox_sizes() -> int:
        return max((conn.outbox_bytes for conn in server.hub.connections()), default=0)

    async def watch_outboxes() -> None:
        nonlocal largest_outbox
        while True:
            largest_outbox = max(largest_outbox, await asyncio.to_thread(server.call, outbox_sizes))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_outboxes())
    received = 0
    for i in range(FLOOD_MESSAGES):
        await flooder.send(op="say", text=TEXT)
        if i % 100 == 99:  # the flooder paces itself by what the room hears
            while received <= i:
                assert (await healthy.next("say"))["from"] == "flooder"
                received += 1
    while received < FLOOD_MESSAGES:
        await healthy.next("say")
        received += 1
    watcher.cancel()
    await asyncio.wait((watcher,))

    assert received == FLOOD_MESSAGES
    await wait_for(lambda: server.stats()["slow_consumer_disconnects"] == 1)
    stats = server.stats()
    assert stats["active_websockets"] == 2
    assert "stalled" not in server.hub.registry.players
    assert 0 < largest_outbox <= cap
    # The stalled client's TCP connection ends once it reads what the kernel still holds:
    # its messages up to the point it fell behind, then the end of the stream.
    data = await asyncio.to_thread(read_until_closed, stalled)
    assert b'"event":"welcome"' in data[:200]
    assert data.count(b'"event":"say"') < FLOOD_MESSAGES
    stalled.close()
    await flooder.close()
    await healthy.close()
