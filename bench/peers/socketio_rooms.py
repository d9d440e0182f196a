"""python-socketio's ASGI server with rooms, as its documentation shows it: players start in
the lobby, ``join`` moves them, ``say`` is emitted to their room.

bench/harness.py serves it with the same uvicorn settings as mudgate (and the same 60 s
heartbeat, set here through Engine.IO's ping interval).
"""

from __future__ import annotations

import json
from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi", ping_interval=60, ping_timeout=60)


async def stats(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """For the churn benchmark: what the server holds (not part of the docs' example)."""
    rooms = sio.manager.rooms.get("/", {})
    body = json.dumps(
        {
            "engineio_sockets": len(sio.eio.sockets),
            "environ": len(sio.environ),
            "rooms": len(rooms),
            "room_members": sum(len(members) for members in rooms.values()),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


app = socketio.ASGIApp(sio, other_asgi_app=stats)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    await sio.enter_room(sid, "lobby")
    await sio.save_session(sid, {"room": "lobby"})
    await sio.emit("welcome", {"room": "lobby"}, to=sid)


@sio.event
async def join(sid: str, data: dict[str, str]) -> None:
    session = await sio.get_session(sid)
    await sio.leave_room(sid, session["room"])
    await sio.enter_room(sid, data["room"])
    session["room"] = data["room"]


@sio.event
async def say(sid: str, data: dict[str, str]) -> None:
    session = await sio.get_session(sid)
    await sio.emit("say", {"from": sid, "text": data["text"]}, room=session["room"])


@sio.event
async def disconnect(sid: str, reason: str = "") -> None:
    pass  # python-socketio leaves the rooms and forgets the session itself
