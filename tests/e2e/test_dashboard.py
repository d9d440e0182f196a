"""The dashboard in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from ..conftest import ADMIN_TOKEN
from .clients import Player
from .server import RunningServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


async def open_dashboard(browser: Browser, server: RunningServer) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{server.http_url}/dashboard?every=200")
    await expect(page.locator("#status")).to_have_text("ready")
    return page


async def test_the_dashboard_follows_connections_and_forces_a_cleanup(
    browser: Browser, server_with: object
) -> None:
    server: RunningServer = server_with(forced_cleanup_min_interval=0)  # type: ignore[operator]
    page = await open_dashboard(browser, server)
    await expect(page.locator("#total-connections")).to_have_text("0")

    players = [await Player.connect(server.ws(f"p{i}")) for i in range(3)]
    await expect(page.locator("#total-connections")).to_have_text("3")
    await expect(page.locator("#ws")).to_have_text("3")
    await expect(page.locator("#structures")).to_contain_text("online_players")
    assert float((await page.locator("#rss").inner_text()).replace(",", "")) > 0

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept(ADMIN_TOKEN)))
    await page.click("#force-cleanup")
    await expect(page.locator("#cleanup-result")).to_contain_text("forced cleanup removed")
    await expect(page.locator("#cleanups")).to_contain_text("forced")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    await asyncio.gather(*(player.close() for player in players))
    await expect(page.locator("#total-connections")).to_have_text("0")


async def test_the_dashboard_shows_the_slowest_commands(
    browser: Browser, server: RunningServer
) -> None:
    page = await open_dashboard(browser, server)
    table = page.locator("#commands")
    await expect(table).to_contain_text("none yet")
    async with await Player.connect(server.ws("alice")) as alice:
        await alice.next("welcome")
        await alice.send(op="ping", id=1)
        await alice.next("pong")
        await alice.send(op="tell", to="nobody", text="hello?", id=2)
        await alice.next("error")
    await expect(page.locator("#commands-total")).to_have_text("(2 since start, 1 error)")
    await expect(table.locator("tbody tr")).to_have_count(2)
    tell = table.locator("tbody tr", has_text="tell")
    await expect(tell.locator("td").nth(1)).to_have_text("1")  # count
    await expect(tell.locator("td").nth(2)).to_have_text("1")  # errors
    await expect(tell.locator("td").nth(2)).to_have_attribute("title", "player_not_found: 1")
    await expect(table).to_contain_text("ping")


async def test_a_wrong_admin_token_is_refused_on_the_page(
    browser: Browser, server: RunningServer
) -> None:
    page = await open_dashboard(browser, server)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("wrong")))
    await page.click("#force-cleanup")
    await expect(page.locator("#cleanup-result")).to_contain_text("refused: wrong admin token")


async def test_the_dashboard_shows_alerts(browser: Browser, server_with: object) -> None:
    server: RunningServer = server_with(  # type: ignore[operator]
        large_structure_threshold=1, memory_alert_hold=0
    )
    players = [await Player.connect(server.ws(name)) for name in ("alice", "bob")]
    page = await open_dashboard(browser, server)
    await expect(page.locator("#alerts")).to_contain_text(
        "WARNING: Large data structure online_players with 2 entries"
    )
    await expect(page.locator("#alerts li")).to_have_count(5)  # one per structure over 1
    await asyncio.gather(*(player.close() for player in players))


async def test_the_chart_is_in_mib_and_says_where_the_limit_is(
    browser: Browser, server_with: object
) -> None:
    server: RunningServer = server_with(  # type: ignore[operator]
        check_interval=0.05, sample_interval=0.1
    )
    page = await open_dashboard(browser, server)
    # A limit far above the process (this machine's memory): its lines are named, not drawn.
    await expect(page.locator("#chart-limit")).to_contain_text("Limit", timeout=15_000)
    await expect(page.locator("#chart-limit")).to_contain_text("above the chart")
    await expect(page.locator("#structures")).to_contain_text("/ ")  # each structure's cap


async def test_an_operator_sees_the_players_and_disconnects_one(
    browser: Browser, server: RunningServer
) -> None:
    page = await open_dashboard(browser, server)
    async with (
        await Player.connect(server.ws("mallory")) as mallory,
        await Player.connect(server.ws("alice")) as alice,
    ):
        await mallory.next("welcome")
        await alice.next("welcome")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept(ADMIN_TOKEN)))
        await page.click("#show-players")
        table = page.locator("#players")
        await expect(table).to_contain_text("mallory")
        await expect(table).to_contain_text("lobby")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await table.locator('button[data-player="mallory"]').click()
        assert await mallory.closed() == 4003
        await expect(table).not_to_contain_text("mallory")
        await expect(table).to_contain_text("alice")


async def test_the_dashboard_collapses_on_a_phone(browser: Browser, server: RunningServer) -> None:
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await page.goto(f"{server.http_url}/dashboard?every=200")
    await expect(page.locator("#status")).to_have_text("ready")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    sections = page.locator("main > section:not([hidden])")
    widths = {
        round((await s.bounding_box() or {"width": 0})["width"]) for s in await sections.all()
    }
    assert len(widths) == 1  # one column: every section as wide as the screen allows
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-390px.png"), full_page=True)
