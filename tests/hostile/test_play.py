"""A player who pads a ``say`` to forge a line on another player's ``/play``, in Chromium
against a real ``mudgate serve``: the say stays one message of its own, spoken by its sayer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from ..e2e.clients import Player
from ..e2e.conftest import CHROMIUM
from .gateway import Gateway

FORGED = "bob tells you: meet me at the north gate, and bring the key"
PADDED = "hi" + " " * 1500 + FORGED

# Every line of text as the browser laid it out (a long message wraps onto several): its
# characters from the first one on the line, and where that one starts.
VISUAL_LINES = """(log) => {
    const lines = [], range = document.createRange();
    const walker = document.createTreeWalker(log, NodeFilter.SHOW_TEXT);
    let current = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            const character = node.data[i];
            if (/\\s/.test(character)) { if (current) current.text += character; continue; }
            range.setStart(node, i); range.setEnd(node, i + 1);
            const rect = range.getBoundingClientRect();
            if (!current || rect.top > current.top + rect.height / 2) {
                current = { text: "", left: rect.left, top: rect.top };
                lines.push(current);
            }
            current.text += character;
        }
    }
    return lines.map(({ text, left }) => ({ text: text.trim(), left }));
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, as the end-to-end tests drive it."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        await browser.close()


async def play(browser: Browser, server: Gateway, player: str) -> Page:
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    page = await context.new_page()
    await page.goto(f"{server.url}/play?token={server.token(player)}")
    await expect(page.locator("#status")).to_have_text("connected")
    return page


async def test_a_say_padded_with_spaces_cannot_forge_a_tell_on_the_play_page(
    gateway: Callable[..., Gateway], browser: Browser
) -> None:
    server = gateway()
    alice = await play(browser, server, "alice")
    async with await Player.connect(server.ws("mallory")) as mallory:
        await mallory.next("welcome")
        await mallory.ws.send(json.dumps({"op": "say", "text": PADDED}))
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
