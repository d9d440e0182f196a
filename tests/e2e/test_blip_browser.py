"""mudgate.js in Chromium on a flaky network: it keeps trying after failed attempts, waits a
random moment of the server's window after 1012 and 4010, and resumes (every room line once, in
order, across a blip)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Page, expect

from mudgate.protocol import CloseCode

from ..conftest import make_settings
from .blip import BlipProxy
from .clients import Player
from .server import RunningServer, running_server, wait_for

# A page of the gateway's origin (through the proxy when there is one) that runs a MudgateClient
# of its own, kept as `window.client`, and writes down what it sees: `window.said` (the texts of
# the `say` events), `window.states` (each status, with performance.now() as `at`) and
# `window.lost` (each `messageslost` detail).
START_CLIENT = """async ([token, options]) => {
    const { MudgateClient } = await import("/mudgate.js");
    const client = window.client = new MudgateClient({ token, url: "/", ...options });
    window.said = []; window.states = []; window.lost = [];
    client.addEventListener("say", (e) => window.said.push(e.detail.text));
    client.addEventListener("status",
        (e) => window.states.push({ ...e.detail, at: performance.now() }));
    client.addEventListener("messageslost", (e) => window.lost.push(e.detail));
    const welcome = new Promise((ok) => client.addEventListener("welcome", ok, { once: true }));
    client.connect();
    await welcome;
}"""


async def start_client(
    browser: Browser, origin: str, token: str, init_script: str | None = None, **options: Any
) -> Page:
    context = await browser.new_context()
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    await page.goto(f"{origin}/health/live")  # any page of the gateway's origin
    await page.evaluate(START_CLIENT, [token, options])
    return page


async def states(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate("window.states")
    return result


@pytest.fixture
def talkative() -> Iterator[RunningServer]:
    """A server whose players may say 100 lines a second, and whose rooms keep 1000 events."""
    settings = make_settings(
        ping_interval=5,
        ping_timeout=5,
        player_messages_per_second=100,
        player_message_burst=100,
        room_history_size=1000,
    )
    with running_server(settings) as server:
        yield server


@pytest.fixture
async def proxy(talkative: RunningServer) -> AsyncIterator[BlipProxy]:
    async with BlipProxy(("127.0.0.1", talkative.port)) as proxy:
        yield proxy


# Through a blip, with the real server


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_the_page_hears_every_line_once_in_order_across_a_blip(
    browser: Browser, talkative: RunningServer, proxy: BlipProxy, transport: str
) -> None:
    origin = f"http://127.0.0.1:{proxy.port}"
    page = await start_client(browser, origin, talkative.token("ann"), transport=transport)
    await page.evaluate("window.client.send({ op: 'go', room: 'hall' })")
    await wait_for(lambda: talkative.hub.room_of("ann") == "hall")
    lines: list[str] = []

    async with await Player.connect(talkative.ws("bob")) as bob:
        await bob.send(op="go", room="hall")
        await bob.next("room")

        async def talk() -> None:
            while True:
                lines.append(f"line {len(lines) + 1}")
                await bob.send(op="say", text=lines[-1])
                await asyncio.sleep(0.03)

        talking = asyncio.create_task(talk())
        try:
            await page.wait_for_function("window.said.length >= 20")
            await proxy.blip(refuse_for=1.5)
            await expect_reconnected(page)
            heard = len(lines)
            await page.wait_for_function(f"window.said.length >= {heard + 20}", timeout=15_000)
        finally:
            talking.cancel()
        await bob.send(op="say", text="the end")
        await page.wait_for_function("window.said.at(-1) === 'the end'", timeout=15_000)

    said = await page.evaluate("window.said")
    assert said == [*lines, "the end"]
    if transport == "websocket":  # (EventSource waits the server's `retry: 2000` by itself)
        assert proxy.refused >= 1  # an attempt failed in the handshake, and the next went on
    assert talkative.call(lambda: talkative.hub.replayed) > 0  # some came by the replay
    assert await page.evaluate("window.lost") == []
    positions = await page.evaluate("window.client.positions")
    assert positions["room:hall"]["offset"] > len(lines)


async def expect_reconnected(page: Page) -> None:
    """Wait for the page to have lost its connection, then for it to be open again."""
    await page.wait_for_function(
        "window.states.some((s) => s.state === 'retrying')"
        " && window.states.at(-1).state === 'open'",
        timeout=15_000,
    )


async def test_the_play_page_tells_of_lines_the_gateway_no_longer_has(
    browser: Browser, server_with: Any
) -> None:
    server: RunningServer = server_with(room_history_size=5)
    async with BlipProxy(("127.0.0.1", server.port)) as proxy:
        page = await (await browser.new_context()).new_page()
        await page.goto(f"http://127.0.0.1:{proxy.port}/play?token={server.token('ann')}")
        await expect(page.locator("#status")).to_have_text("connected")
        await page.fill("#input", "go hall")
        await page.press("#input", "Enter")
        await expect(page.locator("#room")).to_have_text("in hall")
        async with await Player.connect(server.ws("bob")) as bob:
            await bob.send(op="go", room="hall")
            await bob.send(op="say", text="before the blip")
            await expect(page.locator("#log")).to_contain_text("bob: before the blip")
            await proxy.blip(refuse_for=1.0)
            await wait_for(lambda: server.hub.room_of("ann") is None)
            for number in range(1, 21):  # more than the room keeps
                await bob.send(op="say", text=f"while away {number}")
            await bob.send(op="say", text="")  # an error, once the 20 are said
            await bob.next("error")
            await expect(page.locator(".away").last).to_have_text(
                "— some messages in hall were lost while you were away —", timeout=15_000
            )
            await expect(page.locator("#room")).to_have_text("in hall")
            await bob.send(op="say", text="after the blip")
            await expect(page.locator("#log")).to_contain_text("bob: after the blip")
    await expect(page.locator("#log")).not_to_contain_text("while away 1")


@pytest.mark.parametrize("resets_handshakes", [True, False], ids=["reset", "refused"])
async def test_attempts_that_fail_before_they_open_are_followed_by_the_next(
    browser: Browser, talkative: RunningServer, resets_handshakes: bool
) -> None:
    async with BlipProxy(
        ("127.0.0.1", talkative.port), resets_handshakes=resets_handshakes
    ) as proxy:
        origin = f"http://127.0.0.1:{proxy.port}"
        page = await start_client(browser, origin, talkative.token("cat"), maxBackoff=300)
        await proxy.blip(refuse_for=1.5)
        await expect_reconnected(page)
    seen = await states(page)
    retries = [s for s in seen if s["state"] == "retrying"]
    assert len(retries) >= 3  # the cut, then attempts refused for 1.5 s at most 300 ms apart
    assert all(s["code"] == 1006 and 0 < s["delay"] <= 300 for s in retries)
    assert [s["state"] for s in seen if s["state"] in ("open", "closed")] == ["open", "open"]


async def test_after_1012_the_page_waits_a_random_moment_of_the_window_in_the_reason(
    browser: Browser, talkative: RunningServer
) -> None:
    page = await start_client(browser, talkative.http_url, talkative.token("dan"))
    for restarts in range(1, 5):
        restart(talkative, "dan", "restarting; reconnect within 0.4 s")
        await page.wait_for_function(
            f"window.states.filter((s) => s.state === 'open').length === {restarts + 1}"
        )
    seen = await states(page)
    delays = [s["delay"] for s in seen if s["state"] == "retrying"]
    assert len(delays) == 4
    assert all(0 <= delay <= 400 for delay in delays)
    assert len(set(delays)) == 4  # spread, not one fixed wait
    # Each wait was kept: the next attempt started no sooner than the delay said.
    for before, after in itertools.pairwise(seen):
        if before["state"] == "retrying":
            assert after["state"] == "connecting"
            assert after["at"] - before["at"] >= before["delay"] - 5


async def test_after_4010_the_page_waits_within_the_welcomes_reconnect_window(
    browser: Browser, server_with: Any
) -> None:
    server: RunningServer = server_with(reconnect_window=0.3)
    page = await start_client(browser, server.http_url, server.token("gil"))
    assert await page.evaluate("window.client.reconnectWindow") == 300
    for recycles in range(1, 4):
        restart(server, "gil", None, CloseCode.RECYCLED)  # the reason names no window
        await page.wait_for_function(
            f"window.states.filter((s) => s.state === 'open').length === {recycles + 1}"
        )
    retries = [s for s in await states(page) if s["state"] == "retrying"]
    assert [s["code"] for s in retries] == [4010] * 3
    assert all(0 <= s["delay"] <= 300 for s in retries)


async def test_without_jitter_the_page_comes_back_at_once_after_1012(
    browser: Browser, talkative: RunningServer
) -> None:
    page = await start_client(browser, talkative.http_url, talkative.token("eve"), jitter=False)
    restart(talkative, "eve", "restarting; reconnect within 30 s")
    await expect_reconnected(page)
    retries = [s for s in await states(page) if s["state"] == "retrying"]
    assert [(s["code"], s["delay"]) for s in retries] == [(1012, 0)]


def restart(
    server: RunningServer,
    player: str,
    reason: str | None,
    code: CloseCode = CloseCode.SERVICE_RESTART,
) -> None:
    """Close ``player``'s connections with ``code`` and ``reason`` (by default the code's),
    as a restarting server does."""

    def close() -> None:
        for conn in list(server.hub.registry.player_connections[player]):
            conn.close(code, reason)

    server.call(close)


async def test_an_attempt_that_hangs_in_the_handshake_is_given_up_and_the_next_made(
    browser: Browser, talkative: RunningServer
) -> None:
    # A listener that accepts and never answers: a proxy whose upstream is gone.
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        page = await (await browser.new_context()).new_page()
        await page.goto(f"{talkative.http_url}/health/live")
        await page.evaluate(
            START_CLIENT.replace("await welcome;", ""),
            [
                talkative.token("fay"),
                {"url": f"http://127.0.0.1:{port}/", "openTimeout": 200, "maxBackoff": 100},
            ],
        )
        await page.wait_for_function(
            "window.states.filter((s) => s.state === 'retrying').length >= 3"
        )
        await page.evaluate("window.client.close()")
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
    retries = [s for s in await states(page) if s["state"] == "retrying"]
    assert all(s["code"] == 1006 for s in retries)


# The client alone: the test plays the server over a fake WebSocket the page is given.

FAKE_SOCKET = """
window.sockets = [];
window.WebSocket = class FakeSocket {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor(url) {
        this.url = String(url); this.readyState = 0; this.sent = []; window.sockets.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    // As a browser's: closing one that is not open yet fails it (1006).
    close(code = 1000, reason = "") { this.closed(this.readyState === 0 ? 1006 : code, reason); }
    open() { this.readyState = 1; this.onopen({}); }
    receive(message) { this.onmessage({ data: JSON.stringify({ type: "event", ...message }) }); }
    closed(code, reason = "") {
        if (this.readyState === 3) return;
        this.readyState = 3; this.onclose({ code, reason });
    }
};
"""


async def fake_client(browser: Browser, server: RunningServer, **options: Any) -> Page:
    """A page whose MudgateClient (``window.client``) talks to ``window.sockets``, open and
    welcomed (player ann, in hall)."""
    page = await (await browser.new_context()).new_page()
    await page.add_init_script(FAKE_SOCKET)
    await page.goto(f"{server.http_url}/health/live")
    await page.evaluate(
        START_CLIENT.replace("await welcome;", ""),
        [server.token("ann"), {"maxBackoff": 50, **options}],
    )
    await next_socket(page, 1, welcome={"room": "hall", "reconnect_window": 0.05})
    return page


async def next_socket(page: Page, count: int, welcome: dict[str, Any] | None = None) -> str:
    """Wait for the client's ``count``th socket, open it and welcome ann; its URL."""
    await page.wait_for_function(f"window.sockets.length === {count}")
    url: str = await page.evaluate(
        """(welcome) => {
            const socket = window.sockets.at(-1);
            socket.open();
            socket.receive({ event: "welcome", player: "ann", room: "lobby", ...welcome });
            return socket.url;
        }""",
        welcome or {},
    )
    return url


async def receive(page: Page, *messages: dict[str, Any]) -> None:
    await page.evaluate(
        "(messages) => { for (const m of messages) window.sockets.at(-1).receive(m); }",
        list(messages),
    )


def say(offset: int, epoch: str, text: str, room: str = "hall") -> dict[str, Any]:
    return {
        "event": "say",
        "room": room,
        "from": "bob",
        "text": text,
        "offset": offset,
        "epoch": epoch,
    }


async def test_an_event_already_had_is_dropped(browser: Browser, server: RunningServer) -> None:
    page = await fake_client(browser, server)
    await receive(page, say(1, "e1", "one"), say(2, "e1", "two"), say(3, "e1", "three"))
    await receive(page, say(2, "e1", "two again"), say(3, "e1", "three again"))
    await receive(page, say(4, "e1", "four"))
    await receive(page, say(1, "e2", "a new epoch starts over"))
    assert await page.evaluate("window.said") == [
        "one",
        "two",
        "three",
        "four",
        "a new epoch starts over",
    ]
    assert await page.evaluate("window.client.positions") == {
        "room:hall": {"offset": 1, "epoch": "e2"}
    }


async def test_the_next_connection_names_the_room_and_channels_where_the_client_was(
    browser: Browser, server: RunningServer
) -> None:
    page = await fake_client(browser, server)
    await receive(
        page,
        {"event": "arrive", "room": "tower", "player": "ann", "offset": 7, "epoch": "t"},
        {"event": "subscribed", "channel": "ooc"},
        {"event": "chat", "channel": "ooc", "from": "bob", "text": "hi", "offset": 3, "epoch": "c"},
        {"event": "subscribed", "channel": "quiet"},
        {"event": "subscribed", "channel": "gone"},
        {"event": "unsubscribed", "channel": "gone"},
        {"event": "chat", "channel": "news", "from": "cy", "text": "!", "offset": 9, "epoch": "n"},
    )
    expected = "room:tower:7:t,channel:ooc:3:c,channel:quiet:0:,channel:news:9:n"
    assert await page.evaluate("window.client.resumeString") == expected
    assert await page.evaluate("window.client.room") == "tower"

    await page.evaluate("window.sockets.at(-1).closed(1006)")
    url = await next_socket(page, 2)
    query = parse_qs(urlsplit(url).query)
    assert query["resume"] == [expected]
    assert query["token"] == [await page.evaluate("window.client.token")]
    # The welcome puts ann in the lobby; the server puts her back (an arrive of her own) after
    # replaying what she missed there, then answers each topic named.
    await receive(
        page,
        say(8, "t", "missed in the tower", room="tower"),
        {
            "event": "resumed",
            "room": "tower",
            "recovered": True,
            "offset": 8,
            "epoch": "t",
            "missed": 1,
            "reason": None,
        },
        {
            "event": "resumed",
            "channel": "ooc",
            "recovered": False,
            "offset": 20,
            "epoch": "c2",
            "missed": 0,
            "reason": "epoch_changed",
        },
        {"event": "arrive", "room": "tower", "player": "ann", "offset": 9, "epoch": "t"},
        say(8, "t", "missed in the tower, again", room="tower"),
        {
            "event": "chat",
            "channel": "ooc",
            "from": "bob",
            "text": "old",
            "offset": 20,
            "epoch": "c2",
        },
    )
    assert await page.evaluate("window.said") == ["missed in the tower"]
    assert await page.evaluate("window.client.positions") == {
        "room:tower": {"offset": 9, "epoch": "t"},
        "channel:ooc": {"offset": 20, "epoch": "c2"},
        "channel:news": {"offset": 9, "epoch": "n"},
    }
    lost = await page.evaluate("window.lost")
    assert [(loss["topic"], loss["channel"], loss["reason"]) for loss in lost] == [
        ("channel:ooc", "ooc", "epoch_changed")
    ]


@pytest.mark.parametrize(
    ("code", "reason", "window_ms"),
    [
        (1012, "", 50),  # the welcome's reconnect_window
        (4010, "recycled; reconnect within 0.02 s", 20),  # the close reason's, first
        (1012, "restarting; reconnect within 0.03 s", 30),
    ],
)
async def test_after_1012_and_4010_the_wait_is_a_random_moment_of_the_window(
    browser: Browser, server: RunningServer, code: int, reason: str, window_ms: int
) -> None:
    page = await fake_client(browser, server)
    delays = []
    for count in range(2, 7):
        await page.evaluate(f"window.sockets.at(-1).closed({code}, {reason!r})")
        await next_socket(page, count, welcome={"reconnect_window": 0.05})
        retrying = (await states(page))[-3]
        assert retrying["state"] == "retrying"
        assert retrying["code"] == code
        delays.append(retrying["delay"])
    assert all(0 <= delay <= window_ms for delay in delays)
    assert len(set(delays)) == len(delays)


async def test_without_a_window_from_the_server_the_wait_is_within_5_s(
    browser: Browser, server: RunningServer
) -> None:
    page = await fake_client(browser, server)
    await page.evaluate("window.client.reconnectWindow = null")  # as before any such welcome
    await page.evaluate("window.sockets.at(-1).closed(4010, 'recycled')")
    retrying = (await states(page))[-1]
    await page.evaluate("window.client.close()")
    assert retrying["state"] == "retrying"
    assert 0 <= retrying["delay"] <= 5000


@pytest.mark.parametrize("code", [1000, 1008, 4003, 4009])
async def test_the_documented_codes_end_the_client(
    browser: Browser, server: RunningServer, code: int
) -> None:
    page = await fake_client(browser, server)
    await page.evaluate(f"window.sockets.at(-1).closed({code})")
    last = (await states(page))[-1]
    assert (last["state"], last["code"]) == ("closed", code)
    await page.wait_for_timeout(100)  # twice maxBackoff: no attempt follows
    assert await page.evaluate("window.sockets.length") == 1


@pytest.mark.parametrize("code", [1001, 1006, 1011, 1013, 4008, 4011])
async def test_any_other_end_is_followed_by_the_next_attempt(
    browser: Browser, server: RunningServer, code: int
) -> None:
    page = await fake_client(browser, server)
    await page.evaluate(f"window.sockets.at(-1).closed({code})")
    await page.wait_for_function("window.sockets.length === 2")
    retrying = [s for s in await states(page) if s["state"] == "retrying"]
    assert [s["code"] for s in retrying] == [code]
    await page.evaluate("window.client.close()")


async def test_the_play_page_says_when_messages_were_lost_while_away(
    browser: Browser, server: RunningServer
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.add_init_script(FAKE_SOCKET)
    await page.goto(f"{server.http_url}/play?token={server.token('ann')}")
    await next_socket(page, 1, welcome={"room": "hall"})
    await expect(page.locator("#status")).to_have_text("connected")
    await receive(page, say(1, "e1", "before the blip"))
    await page.evaluate("window.sockets.at(-1).closed(1006)")
    await expect(page.locator("#status")).to_contain_text("reconnecting")
    url = await next_socket(page, 2, welcome={"room": "lobby"})
    assert parse_qs(urlsplit(url).query)["resume"] == ["room:hall:1:e1"]
    await receive(
        page,
        {
            "event": "resumed",
            "room": "hall",
            "recovered": False,
            "offset": 250,
            "epoch": "e1",
            "missed": 0,
            "reason": "too_old",
        },
        {"event": "arrive", "room": "hall", "player": "ann", "offset": 251, "epoch": "e1"},
    )
    await expect(page.locator(".away").last).to_have_text(
        "— some messages in hall were lost while you were away —"
    )
    await expect(page.locator("#room")).to_have_text("in hall")
    await expect(page.locator("#log")).not_to_contain_text("resumed")  # not shown as raw JSON
