"""Web MUD clients on /ws in mudstandards.org's subprotocols (gmcp.mudstandards.org,
terminal.mudstandards.org), beside players on mudgate's own JSON protocol."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from .clients import MudClient, Player
from .server import RunningServer, wait_for

GMCP = "gmcp.mudstandards.org"
TERMINAL = "terminal.mudstandards.org"


async def test_a_gmcp_client_and_a_json_player_in_one_room_talk(server: RunningServer) -> None:
    async with await MudClient.connect(server.ws("mud")) as mud:
        assert mud.ws.subprotocol == GMCP
        assert "Welcome, \x1b[1mmud\x1b[0m" in await mud.next_text("Welcome")
        assert await mud.next_gmcp("Char.Name") == ("Char.Name", {"name": "mud", "fullname": "mud"})
        async with await Player.connect(server.ws("jay")) as jay:
            await jay.next("welcome")
            # A typed line, as telnet takes it; the JSON player gets the event as JSON.
            await mud.type("say hello from the web client")
            said = await jay.next("say")
            assert (said["from"], said["text"]) == ("mud", "hello from the web client")
            await jay.send(op="say", text="hello back")
            # Text with its colour, lines ended with CR LF; and the same as GMCP.
            text = await mud.next_text("hello back")
            assert text == "\x1b[33mjay\x1b[0m says: hello back\r\n"
            assert await mud.next_gmcp("Comm.Channel.Text") == (
                "Comm.Channel.Text",
                {"channel": "say", "talker": "mud", "text": "mud says: hello from the web client"},
            )
            assert (await mud.next_gmcp("Comm.Channel.Text"))[1]["talker"] == "jay"


async def test_room_info_and_channel_text_arrive_as_gmcp(server: RunningServer) -> None:
    async with await MudClient.connect(server.ws("mud")) as mud:
        await mud.next_text("Welcome")
        await mud.type("go tavern")
        room = (await mud.next_gmcp("Room.Info"))[1]
        assert (room["num"], room["name"]) == ("tavern", "tavern")
        assert await mud.next_gmcp("Room.Players") == (
            "Room.Players",
            [{"name": "mud", "fullname": "mud"}],
        )
        await mud.type("subscribe ooc")
        await mud.next_text("You listen to [ooc]")
        await mud.type("chat ooc anyone here?")
        assert await mud.next_gmcp("Comm.Channel.Text") == (
            "Comm.Channel.Text",
            {"channel": "ooc", "talker": "mud", "text": "[ooc] mud: anyone here?"},
        )


async def test_core_ping_is_answered_and_mudgate_event_only_on_request(
    server: RunningServer,
) -> None:
    async with await MudClient.connect(server.ws("mud")) as mud:
        await mud.send_gmcp("Core.Hello", {"client": "test", "version": "1"})
        await mud.send_gmcp("Core.Ping")
        assert await mud.next_gmcp("Core.Ping") == ("Core.Ping", None)
        # Without "Mudgate 1" in Core.Supports, no Mudgate.Event is sent: the first to come
        # is the second who's.
        await mud.send_gmcp("Mudgate.Command", {"op": "who", "id": 1})
        assert "Online (1): mud" in await mud.next_text("Online")
        await mud.send_gmcp("Core.Supports.Set", ["Room 1", "Mudgate 1"])
        await mud.send_gmcp("Mudgate.Command", {"op": "who", "id": 2})
        event = (await mud.next_gmcp("Mudgate.Event"))[1]
        assert (event["event"], event["id"], event["players"]) == ("who", 2, ["mud"])
        await mud.send_gmcp("Core.Supports.Remove", ["Mudgate"])
        await mud.send_gmcp("Core.Ping")
        await mud.next_gmcp("Core.Ping")
        assert mud.gmcp.empty()


async def test_mudgate_command_runs_a_frame_and_answers_its_errors(server: RunningServer) -> None:
    async with await MudClient.connect(server.ws("mud")) as mud:
        await mud.send_gmcp("Mudgate.Command", {"op": "go", "room": "hall"})
        assert (await mud.next_gmcp("Room.Info"))[1]["num"] == "hall"
        await mud.send_gmcp("Mudgate.Command", {"op": "fly"})
        assert "unknown" in await mud.next_text("! ")
        await mud.send_gmcp("Mudgate.Command", ["not", "a", "frame"])
        assert "JSON object" in await mud.next_text("! ")


async def test_malformed_gmcp_is_answered_and_the_connection_stays(server: RunningServer) -> None:
    async with await MudClient.connect(server.ws("mud")) as mud:
        for bad in ("Core.Ping {not json", " {}", "C" * 10_000 + " {}", "Core.Hello \xff{"):
            await mud.ws.send(bad)
            error = (await mud.next_gmcp("Mudgate.Error"))[1]
            assert error["message"]
        await mud.send_gmcp("Core.Ping")
        assert await mud.next_gmcp("Core.Ping") == ("Core.Ping", None)


async def test_a_client_that_keeps_sending_bad_gmcp_is_closed(server_with: Any) -> None:
    server: RunningServer = server_with(bad_frame_limit=3)
    async with await MudClient.connect(server.ws("mud")) as mud:
        for _ in range(5):
            await mud.ws.send(" not gmcp")
        assert await mud.closed() == 1008


async def test_an_unknown_subprotocol_falls_back_to_json(server: RunningServer) -> None:
    url = server.ws("jay")
    async with connect(url, subprotocols=[Subprotocol("v1.example.org")]) as ws:
        assert ws.subprotocol is None
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        player = Player(ws)
        assert (await player.next("welcome"))["player"] == "jay"
    # Offered among others, the first mudgate speaks is chosen.
    offered = [Subprotocol("v1.example.org"), Subprotocol(TERMINAL), Subprotocol(GMCP)]
    async with connect(server.ws("mud"), subprotocols=offered) as ws:
        assert ws.subprotocol == TERMINAL


async def test_a_line_over_max_message_bytes_closes_with_1009(server_with: Any) -> None:
    server: RunningServer = server_with(max_message_bytes=1024)
    async with await MudClient.connect(server.ws("mud")) as mud:
        await mud.next_text("Welcome")
        await mud.type("say " + "x" * 1000)  # under the limit: said
        await mud.next_text("x" * 1000)
        await mud.type("say " + "x" * 1100)
        assert await mud.closed() == 1009
    await wait_for(lambda: server.stats()["total_connections"] == 0)


async def test_control_characters_are_dropped_from_typed_lines(server: RunningServer) -> None:
    async with (
        await MudClient.connect(server.ws("mud")) as mud,
        await Player.connect(server.ws("jay")) as jay,
    ):
        await jay.next("welcome")
        # Escapes, a bell, NUL and backspaces; two lines in one frame, CR LF and LF.
        await mud.type(b"say \x1b[2Jclear\x07ed\x00\r\nsay tpyo\x08\x08\x08ypo\n\n")
        assert (await jay.next("say"))["text"] == "[2Jcleared"
        assert (await jay.next("say"))["text"] == "typo"
        await mud.type(b"\xff\xfe say \xc3(")  # not UTF-8: replaced, never an error
        assert "unknown command" in await mud.next_text("! ")


async def test_unknown_words_are_told_and_quit_says_goodbye(server: RunningServer) -> None:
    async with await MudClient.connect(server.ws("mud")) as mud:
        await mud.type("dance wildly")
        assert "unknown command 'dance'" in await mud.next_text("unknown command")
        await mud.type("tell")
        assert "usage: tell TO TEXT" in await mud.next_text("usage")
        await mud.type('{"op": "who"}')  # a JSON frame, typed as it is
        assert "Online (1): mud" in await mud.next_text("Online")
        await mud.type("quit")
        assert await mud.closed() == 1000


async def test_terminal_clients_get_text_only(server: RunningServer) -> None:
    async with await MudClient.connect(server.ws("term"), TERMINAL) as term:
        assert term.ws.subprotocol == TERMINAL
        await term.next_text("Welcome")
        await term.type("go hall")
        await term.next_text("Here: term")
        await term.ws.send("Core.Ping")  # no GMCP here: a bad frame, told as text
        assert "binary frames" in await term.next_text("! ")
        assert term.gmcp.empty()


async def test_compressed_gmcp_clients_get_the_same_frames(server_with: Any) -> None:
    # With permessage-deflate, frames are the connection's own: sent as ASGI messages.
    server: RunningServer = server_with(ws_per_message_deflate=True)
    async with await MudClient.connect(server.ws("mud"), compression="deflate") as mud:
        assert mud.ws.response is not None
        assert "permessage-deflate" in mud.ws.response.headers["Sec-WebSocket-Extensions"]
        await mud.type("say " + "squeezed" * 50)
        assert await mud.next_text("squeezed" * 50)
        assert (await mud.next_gmcp("Comm.Channel.Text"))[1]["talker"] == "mud"


async def test_a_refused_gmcp_client_sees_the_close_code(server_with: Any) -> None:
    server: RunningServer = server_with(max_connections=1)
    async with await Player.connect(server.ws("first")) as first:
        await first.next("welcome")
        async with await MudClient.connect(server.ws("second")) as second:
            assert second.ws.subprotocol == GMCP
            assert await second.closed() == 1013


BROWSER_CLIENT = """async ([url, offered]) => {
    const ws = new WebSocket(url, offered);
    ws.binaryType = "arraybuffer";
    const seen = {protocol: null, text: [], gmcp: [], close: null};
    const done = new Promise((resolve) => {
        ws.onopen = () => {
            seen.protocol = ws.protocol;
            ws.send(new TextEncoder().encode("say from a browser\\r\\n"));
            ws.send("Core.Ping");
        };
        ws.onmessage = (message) => {
            if (typeof message.data === "string") {
                seen.gmcp.push(message.data);
                if (message.data === "Core.Ping") ws.close(1000);
            } else {
                seen.text.push(new TextDecoder().decode(message.data));
            }
        };
        ws.onclose = (event) => { seen.close = event.code; resolve(seen); };
    });
    return await done;
}"""


async def test_a_browser_speaks_gmcp_and_fails_a_handshake_that_selects_none(
    browser: Browser, server: RunningServer
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.http_url}/health/live")
    seen = await page.evaluate(BROWSER_CLIENT, [server.ws("web"), [GMCP]])
    assert (seen["protocol"], seen["close"]) == (GMCP, 1000)
    assert any("Welcome" in text for text in seen["text"])
    assert any("says: from a browser" in text for text in seen["text"])
    assert "Core.Ping" in seen["gmcp"]
    assert any(message.startswith("Char.Name {") for message in seen["gmcp"])
    # A browser that offers only subprotocols mudgate does not speak is answered without one,
    # and fails the handshake itself (RFC 6455 section 4.1): it never sees JSON.
    seen = await page.evaluate(BROWSER_CLIENT, [server.ws("web"), ["v1.example.org"]])
    assert (seen["protocol"], seen["close"], seen["text"]) == (None, 1006, [])
