"""Attacks on what a player gets back after a reconnect, each against a real ``mudgate serve``:
the history driven to every cap at once, a reconnect loop that resumes many channels, and
resumes that ask for the most replay there is."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mudgate.backplane.history import ENTRY_OVERHEAD_BYTES

from .gateway import MIB, Gateway, Healthy, PeakRSS, settled

LINE = "é" * 4000  # the longest line a player may say: 4,000 characters, 8,000 bytes
# Rates no player here reaches: what is tested is the history, not the players' rates.
GENEROUS = {"player_messages_per_second": 100_000, "player_message_burst": 100_000}


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame, ensure_ascii=False))


async def read_until_pong(ws: ClientConnection, request_id: int) -> list[str]:
    """What the server sent up to the pong of ``request_id`` (a ping sent after the rest: the
    commands of one connection are handled in order)."""
    seen: list[str] = []
    async with asyncio.timeout(30):
        while True:
            message = str(await ws.recv())
            if '"pong"' in message and json.loads(message).get("id") == request_id:
                return seen
            seen.append(message)


def budget(server: Gateway) -> dict[str, dict[str, int]]:
    """The memory budget's lines, by structure."""
    lines = server.memory()["memory_budget"]["lines"]
    return {line["structure"]: line for line in lines}


def metric(server: Gateway, line: str) -> float:
    """The value of the /metrics line that starts with ``line``."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])


# The history at every cap at once

ROOMS_EACH = 600  # 4 attackers: 2,400 rooms, each left with a depart, 2.4 times the topic cap
WINDOW = 10  # rooms walked through before the attacker reads what it was sent (165 KB)
AT_ITS_CAPS = {
    "room_history_max_topics": 1000,
    "room_history_max_bytes": 2 * MIB,
    # One line a room (8.5 KB with its JSON and overhead): the second pushes out the first.
    "room_history_topic_bytes": 12 * 1024,
    "room_history_size": 100,
    **GENEROUS,
}


HISTORY = ("room_history", "room_history_topics")


async def wander(server: Gateway, name: str, rooms: int) -> int:
    """``name`` walks into ``rooms`` rooms of its own and says ``LINE`` twice in each, then a
    hundred and ten short lines in the last. It reads all it is sent, a window of rooms at a
    time, so it is never a slow consumer: the characters it was sent."""
    received = 0
    async with connect(server.ws(name), max_size=None) as ws:
        await ws.recv()  # the welcome
        for start in range(0, rooms, WINDOW):
            for number in range(start, min(start + WINDOW, rooms)):
                await send(ws, op="go", room=f"{name}-{number:05d}")
                await send(ws, op="say", text=LINE)
                await send(ws, op="say", text=LINE)
            await send(ws, op="ping", id=start)
            received += sum(map(len, await read_until_pong(ws, start)))
        for _ in range(110):
            await send(ws, op="say", text="and another thing")
        await send(ws, op="ping", id=-1)
        received += sum(map(len, await read_until_pong(ws, -1)))
    return received


async def test_history_at_every_cap_stays_within_them_and_its_budget(
    gateway: Callable[..., Gateway],
) -> None:
    server = gateway(**AT_ITS_CAPS)
    # The growth allowed: the budget's history lines (its events' bytes, its topics) and the
    # attackers' connections (each its transport and a full outbox), 3.6 MB; and 4 MB more,
    # as RSS moves by pages and arenas and the 21 M characters that passed through leave some
    # of the heap behind. Measured: 2.9 MB (3.9 before a topic's events were a list).
    lines = budget(server)
    allowed_mb = (
        sum(lines[name]["max_entries"] * lines[name]["bytes_per_entry"] for name in HISTORY)
        + 4 * lines["connections"]["bytes_per_entry"]
    ) / MIB + 4
    async with Healthy(server) as healthy:
        before = server.rss_mb()
        started = time.perf_counter()
        async with PeakRSS(server) as peak:
            received = await asyncio.gather(
                *(wander(server, f"wanderer{n}", ROOMS_EACH) for n in range(4))
            )
        took = time.perf_counter() - started
        await settled(server)
        after = server.rss_mb()
    healthy.assert_served()
    assert sum(received) > 4 * ROOMS_EACH * 2 * len(LINE)
    history = server.memory()["data_structures"]
    print(
        f"\n{took:.1f} s, {sum(received) / 1e6:.0f} M characters sent back; RSS {before:.1f} MB, "
        f"peak {peak.mb:.1f}, after {after:.1f} (growth allowed {allowed_mb:.1f}); "
        f"{len(healthy.round_trips)} pings, slowest {max(healthy.round_trips) * 1000:.0f} ms; "
        + ", ".join(f"{k} {v}" for k, v in history.items() if k.startswith("room_history"))
    )
    # At the topic cap and the bytes cap, never past them.
    assert history["room_history"] == AT_ITS_CAPS["room_history_max_topics"]
    assert history["room_history_bytes"] <= AT_ITS_CAPS["room_history_max_bytes"]
    assert history["room_history_bytes"] > AT_ITS_CAPS["room_history_max_bytes"] - 9 * 1024
    # Every room's first line was let go early (by its second, at the room's bytes cap, or
    # at the cap on all bytes), and ten of each last room's short lines at the count cap.
    assert history["room_history_evicted"] >= 4 * (ROOMS_EACH + 10)
    assert peak.mb - before < allowed_mb
    assert after - before < allowed_mb


# A reconnect loop that resumes many channels


async def speak(
    server: Gateway, *, room: str | None, channels: int, lines: int, text: str
) -> dict[str, tuple[int, str, int]]:
    """A player says ``lines`` lines of ``text`` in ``room`` (if any) and in each of
    ``channels`` channels: each topic's latest offset, epoch, and the bytes of one line."""
    heard: dict[str, tuple[int, str, int]] = {}

    def note(messages: list[str]) -> None:
        for message in messages:
            event = json.loads(message)
            if event.get("event") in ("say", "chat"):
                kind = "room" if "room" in event else "channel"
                topic = f"{kind}:{event[kind]}"
                heard[topic] = (event["offset"], event["epoch"], len(message.encode()))

    async with connect(server.ws("speaker"), max_size=None) as ws:
        await ws.recv()
        if room is not None:
            await send(ws, op="go", room=room)
            for _ in range(lines):
                await send(ws, op="say", text=text)
            await send(ws, op="ping", id=-1)
            note(await read_until_pong(ws, -1))
        for number in range(channels):
            await send(ws, op="subscribe", channel=f"c{number}")
            for _ in range(lines):
                await send(ws, op="chat", channel=f"c{number}", text=text)
            await send(ws, op="ping", id=number)
            note(await read_until_pong(ws, number))
    return heard


async def reconnect_loop(server: Gateway, name: str, resume: str, attempts: int) -> list[int]:
    """``name`` connects ``attempts`` times in a row with ``resume``, each time dropping the
    connection as soon as it is welcomed, or leaving when refused: the close code of each
    (1000: it was let in)."""
    url = f"{server.ws(name)}&resume={quote(resume)}"
    codes: list[int] = []
    for _ in range(attempts):
        async with connect(url, max_size=None) as ws:
            try:
                assert json.loads(await ws.recv())["event"] == "welcome"
            except ConnectionClosed:
                assert ws.close_code is not None
                codes.append(ws.close_code)
            else:
                codes.append(1000)
                # Gone at once, with the replay unread (a close would wait for it).
                ws.transport.abort()
    return codes


async def test_a_reconnect_loop_resuming_many_channels_is_refused_after_its_allowance(
    gateway: Callable[..., Gateway],
) -> None:
    allowance, attempts = 40, 300  # connection attempts a player, and an address, an hour
    server = gateway(max_rate_limit_entries=allowance, **GENEROUS)
    async with Healthy(server) as healthy:
        heard = await speak(server, room=None, channels=100, lines=20, text="x" * 1000)
        # Half with nothing heard yet (offset 0, no epoch), half from an old offset.
        resume = ",".join(
            f"{topic}:1:{epoch}" if n % 2 else f"{topic}:0:"
            for n, (topic, (_, epoch, _)) in enumerate(heard.items())
        )
        assert len(resume) <= 2048
        await settled(server)
        before = server.rss_mb()
        started = time.perf_counter()
        async with PeakRSS(server) as peak:
            codes = await reconnect_loop(server, "looper", resume, attempts)
        took = time.perf_counter() - started
        await settled(server)
        after = server.rss_mb()
    healthy.assert_served()
    # The healthy player and the speaker came from the same address first.
    let_in = allowance - 2
    assert codes == [1000] * let_in + [4029] * (attempts - let_in)
    refused = 'mudgate_refused_connections_total{reason="too many connection attempts"}'
    assert metric(server, refused) == attempts - let_in
    replayed = server.memory()["data_structures"]["events_replayed"]
    print(
        f"\n{attempts} attempts in {took:.1f} s, {replayed} events replayed; "
        f"RSS {before:.1f} MB, peak {peak.mb:.1f}, after {after:.1f}"
    )
    assert peak.mb - before < 10
    assert after - before < 5


# Resumes that ask for the most replay there is

TOPICS = 40  # the room and 39 channels, each at its byte cap (64 KiB)
RESUMERS = 10
OUTBOX_BYTES = 256 * 1024  # MUDGATE_OUTBOX_MAX_BYTES's default


async def visit(server: Gateway, name: str, room: str) -> None:
    """``name`` goes into ``room`` and leaves the game from there: the one room a resume may
    put them back in."""
    async with connect(server.ws(name)) as ws:
        await ws.recv()  # the welcome
        await send(ws, op="go", room=room)
        await send(ws, op="ping", id=0)
        await read_until_pong(ws, 0)


async def resume_and_read(server: Gateway, name: str, resume: str) -> list[dict[str, Any]]:
    """``name`` reconnects with ``resume`` and reads until it has a resumed event for every
    entry, then pings: everything it was sent after its welcome, pong last."""
    url = f"{server.ws(name)}&resume={quote(resume)}"
    sent: list[dict[str, Any]] = []
    async with connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["event"] == "welcome"
        async with asyncio.timeout(30):
            while sum(event.get("event") == "resumed" for event in sent) < TOPICS:
                sent.append(json.loads(await ws.recv()))
        await send(ws, op="ping", id=1)
        sent.extend(json.loads(message) for message in await read_until_pong(ws, 1))
        sent.append({"event": "pong"})
    return sent


async def test_resumes_asking_for_the_most_replay_fit_the_outbox_and_nobody_is_closed(
    gateway: Callable[..., Gateway],
) -> None:
    # Each topic read costs the player a message of its rate: enough for every topic here.
    server = gateway(**GENEROUS)
    topic_bytes = 64 * 1024
    await asyncio.gather(*(visit(server, f"resumer{n}", "hall") for n in range(RESUMERS)))
    heard = await speak(server, room="hall", channels=TOPICS - 1, lines=20, text="y" * 3900)
    assert len(heard) == TOPICS
    # From just before the oldest each topic still keeps: all it keeps is missed.
    asked = {
        topic: latest - topic_bytes // (size + ENTRY_OVERHEAD_BYTES)
        for topic, (latest, _, size) in heard.items()
    }
    resume = ",".join(f"{topic}:{asked[topic]}:{heard[topic][1]}" for topic in heard)
    async with Healthy(server) as healthy:
        await settled(server)
        before = server.rss_mb()
        async with PeakRSS(server) as peak:
            answers = await asyncio.gather(
                *(resume_and_read(server, f"resumer{n}", resume) for n in range(RESUMERS))
            )
        await settled(server)
        after = server.rss_mb()
    healthy.assert_served()
    for sent in answers:
        assert sent[-1] == {"event": "pong"}  # still connected, and served
        resumed = [event for event in sent if event.get("event") == "resumed"]
        assert [kind_of(event) for event in resumed] == list(heard)
        recovered = [event["recovered"] for event in resumed]
        assert 0 < sum(recovered) < TOPICS
        assert recovered == sorted(recovered, reverse=True)  # the first entries first
        assert {event["reason"] for event in resumed if not event["recovered"]} == {"too_much"}
        replayed = [event for event in sent if event.get("event") in ("say", "chat")]
        assert sum(len(json.dumps(event, separators=(",", ":"))) for event in replayed) < (
            OUTBOX_BYTES
        )
        for event in resumed:
            if event["recovered"]:
                topic = kind_of(event)
                offsets = [e["offset"] for e in replayed if kind_of(e) == topic]
                assert offsets == list(range(asked[topic] + 1, heard[topic][0] + 1))
                assert event["missed"] == len(offsets)
    assert metric(server, "mudgate_slow_consumer_disconnects_total") == 0
    counts = {sum(event.get("recovered") is True for event in sent) for sent in answers}
    print(
        f"\n{RESUMERS} resumes of {TOPICS} topics, each recovered {counts}, the rest "
        f"too_much; RSS {before:.1f} MB, peak {peak.mb:.1f}, after {after:.1f}"
    )
    # Each resumer holds at most a full outbox (of events the history holds too).
    assert peak.mb - before < RESUMERS * OUTBOX_BYTES / MIB + 10
    assert after - before < 10


def kind_of(event: dict[str, Any]) -> str:
    """The topic of a room's or channel's event."""
    return f"room:{event['room']}" if "room" in event else f"channel:{event['channel']}"
