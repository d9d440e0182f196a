"""The connection manager from FastAPI's WebSocket documentation, as its users write it:
a list of sockets, and a broadcast that awaits each send in turn.

bench/harness.py serves it with the same uvicorn settings as mudgate.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


app = FastAPI()
manager = ConnectionManager()


@app.get("/stats")
async def stats() -> dict[str, int]:
    """For the churn benchmark: what the pattern holds (not part of the docs' example)."""
    return {"active_connections": len(manager.active_connections)}


@app.post("/commands")
async def commands(request: Request) -> dict[str, bool]:
    """For the hostile benchmark's slow bodies: a command sent over HTTP, its JSON body read
    as FastAPI apps read one, and broadcast like a message from a socket (not part of the
    docs' example)."""
    command = await request.json()
    await manager.broadcast(json.dumps(command))
    return {"accepted": True}


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    await websocket.send_text('{"type":"event","event":"welcome"}')
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(data)
    except WebSocketDisconnect:
        manager.disconnect(websocket)
