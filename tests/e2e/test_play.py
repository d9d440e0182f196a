"""The play page in a real browser: two players talk; one is cut off and catches up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, Page, expect

from mudgate import CommandContext, Gateway, PlayerText, builtin_commands
from mudgate.protocol import CloseCode

from ..conftest import make_settings
from .server import RunningServer, wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


async def play(browser: Browser, server: RunningServer, player: str, query: str = "") -> Page:
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    page = await context.new_page()
    await page.goto(f"{server.http_url}/play?token={server.token(player)}{query}")
    await expect(page.locator("#status")).to_have_text("connected")
    await expect(page.locator("#who")).to_have_text(player)
    return page


async def type_line(page: Page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def test_two_players_talk_and_one_catches_up_after_being_cut_off(
    browser: Browser, server: RunningServer
) -> None:
    alice = await play(browser, server, "alice")
    bob = await play(browser, server, "bob")
    await type_line(alice, "say hello, bob")
    await expect(bob.locator("#log")).to_contain_text("alice: hello, bob")
    await type_line(bob, "look")
    await expect(bob.locator("#log")).to_contain_text("Here: alice, bob")

    # Cut alice off (the server says "try again later": she backs off before reconnecting).
    def cut() -> None:
        for conn in list(server.hub.registry.player_connections["alice"]):
            conn.close(CloseCode.TRY_AGAIN_LATER)

    server.call(cut)
    await wait_for(lambda: server.stats()["online_players"] == 1)
    await expect(alice.locator("#status")).to_contain_text("reconnecting")
    await type_line(bob, "tell alice you missed the dragon")
    await expect(bob.locator("#log")).to_contain_text("you tell alice: you missed the dragon")
    assert server.stats()["pending_message_entries"] == 1

    await expect(alice.locator("#status")).to_have_text("connected", timeout=15_000)
    await expect(alice.locator("#log")).to_contain_text("while you were away")
    await expect(alice.locator(".tell")).to_contain_text("bob tells you: you missed the dragon")
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=str(ARTIFACTS / "play-alice.png"))
    await bob.screenshot(path=str(ARTIFACTS / "play-bob.png"))

    # The input keeps a history.
    await type_line(alice, "who")
    await expect(alice.locator("#log")).to_contain_text("Online (2): alice, bob")
    await alice.press("#input", "ArrowUp")
    assert await alice.input_value("#input") == "who"
    await alice.press("#input", "ArrowUp")
    assert await alice.input_value("#input") == "say hello, bob"


async def test_the_page_falls_back_to_sse_without_websockets(
    browser: Browser, server: RunningServer
) -> None:
    context = await browser.new_context()
    await context.add_init_script("delete window.WebSocket")
    carol = await context.new_page()
    await carol.goto(f"{server.http_url}/play?token={server.token('carol')}")
    await expect(carol.locator("#transport")).to_have_text("SSE")
    await expect(carol.locator("#status")).to_have_text("connected")
    dave = await play(browser, server, "dave")
    await type_line(carol, "say over events and posts")
    await expect(dave.locator("#log")).to_contain_text("carol: over events and posts")
    await type_line(dave, "say back to you")
    await expect(carol.locator("#log")).to_contain_text("dave: back to you")
    assert server.stats()["active_sse"] == 1


async def test_a_guest_plays_without_a_token(browser: Browser, server: RunningServer) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.http_url}/play")
    await expect(page.locator("#status")).to_have_text("connected")
    await expect(page.locator("#who")).to_contain_text("guest-")


async def test_a_replaced_connection_does_not_reconnect(
    browser: Browser, server_with: object
) -> None:
    server: RunningServer = server_with(max_connections_per_player=1)  # type: ignore[operator]
    first = await play(browser, server, "erin")
    await play(browser, server, "erin")
    await expect(first.locator("#status")).to_have_text("closed")
    await expect(first.locator("#log")).to_contain_text("connection closed (4009)")


async def test_after_a_restart_with_a_new_key_the_page_gets_a_new_token(browser: Browser) -> None:
    # No MUDGATE_SECRET_KEY: each run signs with a random key, so a restart voids every token.
    first = RunningServer(make_settings(secret_key=None))
    first.start()
    page = await (await browser.new_context()).new_page()
    try:
        await page.goto(f"{first.http_url}/play")
        await expect(page.locator("#status")).to_have_text("connected")
        before = await page.locator("#who").text_content()
    finally:
        first.stop()
    second = RunningServer(make_settings(secret_key=None), port=first.port)
    second.start()
    try:
        await expect(page.locator("#log")).to_contain_text("no longer valid", timeout=15_000)
        await expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
        await expect(page.locator("#who")).not_to_have_text(before or "")
        # A reload keeps working too (the stale token is gone from the session).
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "play-after-restart.png"))
    finally:
        second.stop()


class Emote(msgspec.Struct):
    text: str


async def test_typed_lines_are_echoed_free_text_is_said_and_a_games_verbs_work(
    browser: Browser,
) -> None:
    registry = builtin_commands()

    @registry.register("emote", Emote)
    def emote(ctx: CommandContext, args: Emote) -> None:
        ctx.broadcast("narrate", text=f"{ctx.player.id} {args.text}")

    settings = make_settings()
    server = RunningServer(settings, gateway=Gateway(settings, commands=registry))
    server.start()
    try:
        alice = await play(browser, server, "alice")
        bob = await play(browser, server, "bob")
        await type_line(alice, "hello there")
        await expect(alice.locator(".echo")).to_contain_text("> hello there")
        await expect(bob.locator("#log")).to_contain_text("alice: hello there")
        await type_line(alice, "emote waves")  # a verb the page learned from the server
        await expect(bob.locator(".narrate")).to_contain_text("alice waves")
        await type_line(alice, "tell")
        await expect(alice.locator(".error")).to_contain_text("usage: tell TO TEXT")
        await type_line(alice, "help")
        await expect(alice.locator("#log")).to_contain_text("emote TEXT")
        ARTIFACTS.mkdir(exist_ok=True)
        await alice.screenshot(path=str(ARTIFACTS / "play-verbs.png"))
    finally:
        server.stop()


async def test_the_room_and_the_last_lines_survive_a_reload(
    browser: Browser, server: RunningServer
) -> None:
    page = await play(browser, server, "dora")
    await type_line(page, "go tavern")
    await expect(page.locator("#room")).to_have_text("in tavern")
    await type_line(page, "remember me")
    await expect(page.locator("#log")).to_contain_text("dora: remember me")
    await page.reload()
    await expect(page.locator("#status")).to_have_text("connected")
    await expect(page.locator("#log")).to_contain_text("dora: remember me")
    await expect(page.locator("#log")).to_contain_text("— reloaded —")
    await expect(page.locator("#room")).to_have_text("in tavern")
    await wait_for(lambda: server.hub.room_of("dora") == "tavern")


async def test_the_page_fits_a_phone(browser: Browser, server: RunningServer) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(f"{server.http_url}/play?token={server.token('a-rather-long-player-name')}")
    await expect(page.locator("#status")).to_have_text("connected")
    await type_line(page, "look")
    await expect(page.locator(".room")).to_be_visible()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    header = await page.locator("header").bounding_box()
    assert header is not None
    assert header["height"] < 80  # wrapped onto two lines at most, nothing cut
    status = await page.locator("#status").bounding_box()
    assert status is not None
    assert status["x"] + status["width"] <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "play-390px.png"))


async def test_a_games_own_page_imports_the_client_module(
    browser: Browser, server: RunningServer
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.http_url}/health/live")  # any page of the gateway's origin
    heard = await page.evaluate(
        """async (token) => {
            const { MudgateClient, CLOSE } = await import("/mudgate.js");
            const client = new MudgateClient({ token, url: "/" });
            const states = [];
            client.addEventListener("status", (e) => states.push(e.detail.state));
            const next = (name) => new Promise(
                (ok) => client.addEventListener(name, (e) => ok(e.detail), { once: true }));
            const welcome = next("welcome");
            client.connect();
            const { player } = await welcome;
            const pong = next("pong");
            await client.send({ op: "ping", id: 1 });
            const { id } = await pong;
            client.close();
            return { player, id, states, normal: CLOSE.NORMAL };
        }""",
        server.token("frank"),
    )
    assert heard == {
        "player": "frank",
        "id": 1,
        "states": ["connecting", "open", "closed"],
        "normal": 1000,
    }
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        module = await http.get("/mudgate.js")
    assert module.headers["content-type"].startswith("text/javascript")


class Ponder(msgspec.Struct):
    text: PlayerText


@pytest.fixture
def pondering() -> Iterator[RunningServer]:
    """A gateway whose game has a verb that takes a moment, as one waiting for the game's
    process does: ``ponder`` says its text after 50 ms. Meanwhile its ``POST /commands`` is
    under way, and a player may have two (MUDGATE_MAX_COMMANDS_IN_FLIGHT_PER_PLAYER)."""
    commands = builtin_commands()

    @commands.register("ponder", Ponder)
    async def ponder(ctx: CommandContext, args: Ponder) -> None:
        await asyncio.sleep(0.05)
        ctx.broadcast("say", **{"from": ctx.player.id, "text": args.text})

    settings = make_settings()
    assert settings.max_commands_in_flight_per_player == 2
    server = RunningServer(settings, gateway=Gateway(settings, commands=commands))
    server.start()
    yield server
    server.stop()


# A page of the game's own that sends `count` commands over SSE without awaiting them: what
# came back said (in the order it came), what each send() answered, and the errors.
PONDER_WITHOUT_AWAITING = """async ({ token, count, maxQueued }) => {
    const { MudgateClient } = await import("/mudgate.js");
    const client = new MudgateClient({ token, url: "/", transport: "sse", maxQueued });
    const said = [], errors = [];
    client.addEventListener("say", (e) => said.push(e.detail.text));
    client.addEventListener("error", (e) => errors.push([e.detail.code, e.detail.id]));
    const welcome = new Promise((ok) => client.addEventListener("welcome", ok, { once: true }));
    client.connect();
    await welcome;
    const sends = [];
    for (let i = 1; i <= count; i++) {
        sends.push(client.send({ op: "ponder", text: `line ${i}`, id: i }));
    }
    const answers = await Promise.all(sends);
    const served = answers.filter(Boolean).length;
    while (said.length < served) await new Promise((ok) => setTimeout(ok, 10));
    client.close();
    return { transport: client.transport, said, answers, errors };
}"""


async def ponder_without_awaiting(
    browser: Browser, server: RunningServer, count: int, max_queued: int
) -> dict[str, Any]:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.http_url}/health/live")  # any page of the gateway's origin
    heard: dict[str, Any] = await page.evaluate(
        PONDER_WITHOUT_AWAITING,
        {"token": server.token("gina"), "count": count, "maxQueued": max_queued},
    )
    return heard


async def test_the_client_sends_commands_over_sse_one_at_a_time_in_order(
    browser: Browser, pondering: RunningServer
) -> None:
    heard = await ponder_without_awaiting(browser, pondering, count=10, max_queued=64)
    assert heard == {
        "transport": "sse",
        "said": [f"line {i}" for i in range(1, 11)],
        "answers": [True] * 10,
        "errors": [],
    }


async def test_the_client_refuses_commands_past_its_queue_over_sse(
    browser: Browser, pondering: RunningServer
) -> None:
    # One under way, three waiting: the fifth and sixth are refused at once, by the client.
    heard = await ponder_without_awaiting(browser, pondering, count=6, max_queued=3)
    assert heard == {
        "transport": "sse",
        "said": ["line 1", "line 2", "line 3", "line 4"],
        "answers": [True, True, True, True, False, False],
        "errors": [["queue_full", 5], ["queue_full", 6]],
    }
