"""The floor under uvicorn: a bare ASGI callable that accepts a WebSocket or an SSE stream,
sends one event, and holds the connection until the client leaves. Nothing else.

bench/harness.py serves it with the same uvicorn settings as mudgate.
"""

from __future__ import annotations

from typing import Any

WELCOME = '{"type":"event","event":"welcome"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": WELCOME})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        body = f"event: welcome\ndata: {WELCOME}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
