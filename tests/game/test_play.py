"""The play page in a real browser while the game behind the gateway restarts: the player stays
connected, sees a notice, and what they typed meanwhile is answered."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, expect

from .conftest import LinkedGateway


async def test_the_play_page_shows_a_restart_and_stays_connected(
    browser: Browser, linked: Any
) -> None:
    gateway: LinkedGateway = linked()
    first = (await gateway.ready())["pid"]
    page = await browser.new_page()
    await page.goto(f"{gateway.url}/play?token={gateway.token('alice')}")
    await expect(page.locator("#status")).to_have_text("connected")
    log = page.locator("#log")
    await expect(log).to_contain_text("welcome, alice")
    gateway.sighup()
    await expect(log).to_contain_text("the game is restarting")
    await page.fill("#input", "hello")
    await page.press("#input", "Enter")
    await expect(log).to_contain_text("the game is back")
    await expect(log).to_contain_text("hello from the first game")
    assert (await gateway.ready())["pid"] != first
    await expect(page.locator("#status")).to_have_text("connected")
    await page.close()


async def test_the_dashboard_shows_the_game(browser: Browser, linked: Any) -> None:
    gateway: LinkedGateway = linked()
    pid = (await gateway.ready())["pid"]
    page = await browser.new_page()
    await page.goto(f"{gateway.url}/dashboard")
    await expect(page.locator("#game-state")).to_have_text(f"(ready, pid {pid})")
    await expect(page.locator("#game-figures")).to_contain_text("restarts")
    await page.close()
