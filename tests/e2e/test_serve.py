"""`mudgate serve` as an operator runs it: a separate process, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import httpx

from ..conftest import SECRET_KEY
from .clients import Player


async def test_serve_runs_a_gateway_and_stops_gracefully_on_sigterm() -> None:
    env = os.environ | {
        "MUDGATE_SECRET_KEY": SECRET_KEY,
        "MUDGATE_ADMIN_TOKEN": "x" * 20,
        "MUDGATE_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mudgate", "serve", "--port", "0",
        env=env,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        port = None
        async with asyncio.timeout(20):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "the server exited before serving"
                if match := re.search(r"serving on http://127\.0\.0\.1:(\d+)", line):
                    port = int(match.group(1))
                if "Application startup complete" in line:
                    break
        assert port is not None
        async with httpx.AsyncClient() as http:
            guest = (await http.post(f"http://127.0.0.1:{port}/auth/guest")).json()
        player = await Player.connect(f"ws://127.0.0.1:{port}/ws?token={guest['token']}")
        await player.next("welcome")
        process.send_signal(signal.SIGTERM)
        # The server tells connected players it is going away.
        assert await player.closed() == 1012
        async with asyncio.timeout(20):
            # uvicorn re-raises the signal once shut down, as process managers expect.
            assert await process.wait() == -signal.SIGTERM
        log = (await process.stderr.read()).decode()
        # One JSON object a line, uvicorn's lines included, with the facts as fields.
        records = [json.loads(line) for line in log.splitlines()]
        opened = next(r for r in records if r["event"] == "connection opened")
        assert opened["player"] == guest["player"]
        assert opened["transport"] == "websocket"
        assert {"timestamp", "level", "logger", "connection", "remote"} <= set(opened)
        closed = next(r for r in records if r["event"] == "connection closed")
        assert closed["player"] == guest["player"]
        assert any(r["event"] == "Application shutdown complete." for r in records)
        assert "token=<redacted>" in log
        assert guest["token"] not in log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
