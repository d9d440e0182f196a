"""The issue's promise, as a newcomer tries it: a telnet guest and a browser on /play talk."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from ..e2e.server import RunningServer
from .client import TelnetClient
from .conftest import telnet_port


async def test_a_telnet_guest_talks_with_a_browser_on_the_play_page(
    browser: Browser, server: RunningServer
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.http_url}/play")  # a guest, as a newcomer is
    await expect(page.locator("#status")).to_have_text("connected")
    browser_player = await page.locator("#who").inner_text()

    telnet = await TelnetClient.connect(telnet_port(server))
    me = await telnet.login("guest")
    telnet.line("say hello, browser")
    await expect(page.locator("#log")).to_contain_text(f"{me}: hello, browser")
    await page.fill("#input", "hello, telnet")
    await page.press("#input", "Enter")
    await telnet.expect(f"{browser_player} says: hello, telnet")
    telnet.line("who")
    await telnet.expect("Online (2)")
    await telnet.close()
