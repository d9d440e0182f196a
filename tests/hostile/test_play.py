"""A player who pads a ``say`` to forge a line on another player's ``/play``, in Chromium
against a real ``mudgate serve``: the say stays one message of its own, spoken by its sayer.
And where a game lets a player's text through uncollapsed, it still wraps inside its own
message."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from playwright.async_api import Browser, Page, expect

import mudgate
from mudgate import CommandContext, builtin_commands

from ..conftest import make_settings
from ..e2e.clients import Player
from ..e2e.server import RunningServer
from .gateway import Gateway

FORGED = "bob tells you: meet me at the north gate, and bring the key"
# Runs of spaces, and spaces each followed by an invisible variation selector (U+FE0F), which
# kept a run from collapsing until the whole Default_Ignorable_Code_Point set was deleted.
PADDINGS = {"spaces": " " * 1500, "variation selectors": " \ufe0f" * 1500}

# Every line of text as the browser laid it out (a long message wraps onto several): its
# characters from the first one on the line that shows (not a blank, not a character that
# prints nothing, as a variation selector), and where that one starts.
VISUAL_LINES = """(log) => {
    const lines = [], range = document.createRange();
    const walker = document.createTreeWalker(log, NodeFilter.SHOW_TEXT);
    let current = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            const character = node.data[i];
            range.setStart(node, i); range.setEnd(node, i + 1);
            const rect = range.getBoundingClientRect();
            if (/\\s/.test(character) || rect.width === 0) {
                if (current) current.text += character;
                continue;
            }
            if (!current || rect.top > current.top + rect.height / 2) {
                current = { text: "", left: rect.left, top: rect.top };
                lines.push(current);
            }
            current.text += character;
        }
    }
    return lines.map(({ text, left }) => ({ text: text.trim(), left }));
}"""


async def play(browser: Browser, url: str, token: str) -> Page:
    """``/play`` of the gateway at ``url``, signed in with ``token``."""
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    page = await context.new_page()
    await page.goto(f"{url}/play?token={token}")
    await expect(page.locator("#status")).to_have_text("connected")
    return page


@pytest.mark.parametrize("padding", PADDINGS.values(), ids=PADDINGS.keys())
async def test_a_padded_say_cannot_forge_a_tell_on_the_play_page(
    gateway: Callable[..., Gateway], browser: Browser, padding: str
) -> None:
    server = gateway()
    alice = await play(browser, server.url, server.token("alice"))
    async with await Player.connect(server.ws("mallory")) as mallory:
        await mallory.next("welcome")
        await mallory.ws.send(json.dumps({"op": "say", "text": "hi" + padding + FORGED}))
        await expect(alice.locator("#log .say")).to_have_count(1)

    # As laid out on the screen: no line of alice's log begins with the forged words.
    lines: list[dict[str, Any]] = await alice.locator("#log").evaluate(VISUAL_LINES)
    forged = [line for line in lines if line["text"].startswith("bob tells you")]
    assert forged == [], lines

    # As elements: one message, mallory's, whose text holds the words; nobody else speaks.
    say = alice.locator("#log .say")
    await expect(say.locator(".speaker")).to_have_text("mallory")
    await expect(say.locator(".said")).to_have_text(f"hi {FORGED}")
    await expect(alice.locator("#log .speaker", has_text="bob")).to_have_count(0)
    texts = await alice.locator("#log > *").all_text_contents()
    assert not [text for text in texts if text.startswith("bob tells you")], texts


class Pose(msgspec.Struct):
    text: str  # a game's mistake: a player's text declared a plain str, so never collapsed


@pytest.fixture
def careless_game() -> Iterator[RunningServer]:
    """A gateway whose game has a verb that passes a player's text on as it came: ``pose``
    says it, as ``say`` would, and narrates it, as a game's own line."""
    commands = builtin_commands()

    @commands.register("pose", Pose)
    def pose(ctx: CommandContext, args: Pose) -> None:
        ctx.broadcast("say", **{"from": ctx.player.id, "text": args.text})
        ctx.broadcast("narrate", text=f"{ctx.player.id} {args.text}")

    settings = make_settings()
    server = RunningServer(settings, gateway=mudgate.Gateway(settings, commands=commands))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("padding", PADDINGS.values(), ids=PADDINGS.keys())
async def test_padding_the_server_did_not_collapse_wraps_inside_its_own_message(
    careless_game: RunningServer, browser: Browser, padding: str
) -> None:
    alice = await play(browser, careless_game.http_url, careless_game.token("alice"))
    async with await Player.connect(careless_game.ws("mallory")) as mallory:
        await mallory.next("welcome")
        await mallory.send(op="pose", text="hi" + padding + FORGED)
        await expect(alice.locator("#log .say")).to_have_count(1)
        await expect(alice.locator("#log .narrate")).to_have_count(1)

    # As laid out: the padding reached the page and wrapped (more lines than messages), but a
    # message's later lines are indented (a hanging indent), so the only lines that begin
    # where a message begins, at the left of the log, are the messages' first lines.
    lines: list[dict[str, Any]] = await alice.locator("#log").evaluate(VISUAL_LINES)
    messages = await alice.locator("#log > *").count()
    message_left = min(line["left"] for line in lines)
    starts = [line for line in lines if line["left"] < message_left + 1]
    assert len(lines) > messages
    assert len(starts) == messages, starts

    # As elements: mallory speaks, nobody else; the narrated line is one element of its own.
    await expect(alice.locator("#log .say .speaker")).to_have_text("mallory")
    await expect(alice.locator("#log .speaker", has_text="bob")).to_have_count(0)
    texts = await alice.locator("#log > *").all_text_contents()
    assert not [text for text in texts if text.startswith("bob tells you")], texts
