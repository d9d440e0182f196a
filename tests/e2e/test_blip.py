"""A player on a flaky network: behind a proxy that resets their connection and then refuses
new ones (resetting them in the handshake) for a while, a ``mudgate.client.Client`` comes back
by itself and sees every line said in its room exactly once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from mudgate.client import Client

from .blip import BlipProxy
from .server import wait_for

WAIT = 15.0


async def test_python_client_survives_a_blip(server_with: Any) -> None:
    # bob talks 50 lines a second: the room's history holds the few seconds alice is away.
    server = server_with(
        player_messages_per_second=1000,
        player_message_burst=1000,
        room_history_size=1000,
        room_history_topic_bytes=1024 * 1024,
    )
    heard: list[str] = []
    resumed: list[dict[str, Any]] = []
    said: list[str] = []
    async with BlipProxy(("127.0.0.1", server.port)) as proxy:
        alice = Client(
            f"ws://127.0.0.1:{proxy.port}/ws", token_factory=lambda: server.token("alice")
        )
        bob = Client(server.ws_url, token_factory=lambda: server.token("bob"))
        async with alice, bob:
            for player in (alice, bob):
                await player.next("welcome", within=WAIT)
                await player.send({"op": "go", "room": "hall"})
                assert (await player.next("room", within=WAIT))["room"] == "hall"

            async def listen() -> None:
                async for message in alice:
                    if message.get("event") == "resumed":
                        resumed.append(message)
                    elif message.get("event") == "say" and message.get("from") == "bob":
                        heard.append(message["text"])
                    elif message.get("event") == "pong" and message.get("id") == "last":
                        return

            async def talk(lines: int, until: asyncio.Event | None = None) -> None:
                while len(said) < lines or (until is not None and not until.is_set()):
                    said.append(f"line {len(said)}")
                    await bob.send({"op": "say", "text": said[-1]})
                    await asyncio.sleep(0.02)

            listening = asyncio.ensure_future(listen())
            try:
                await talk(20)
                await proxy.blip(refuse_for=1.5)
                back = asyncio.Event()
                talking = asyncio.ensure_future(talk(0, until=back))
                await wait_for(lambda: proxy.accepted >= 2, WAIT)  # alice is back
                back.set()
                await talking
                await talk(len(said) + 20)
                # bob's last line has reached everyone in the hall once he hears it himself:
                # alice's pong comes after it.
                await bob.send({"op": "say", "text": "the end"})
                while (await bob.next("say", within=WAIT))["text"] != "the end":
                    pass
                await alice.send({"op": "ping", "id": "last"})
                await asyncio.wait_for(asyncio.shield(listening), WAIT)
            finally:
                listening.cancel()

    assert proxy.cut >= 1
    assert proxy.refused >= 1  # an attempt was reset in the handshake, and tried again
    assert alice.reconnects >= 2
    assert heard == [*said, "the end"]  # every line, once, in order
    assert [(event["room"], event["recovered"]) for event in resumed] == [("hall", True)]
    assert resumed[0]["missed"] > 0
    assert alice.lost == 0
