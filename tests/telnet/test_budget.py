"""What a telnet connection costs the memory budget: measured, and under the budget's figure."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

from mudgate.gateway import Gateway
from mudgate.memory.budget import TELNET_LOGIN_BYTES, mccp_bytes, memory_budget
from mudgate.server.telnet.protocol import LOGIN_LINE_BYTES, TelnetProtocol

from ..conftest import make_settings


class Socketless:
    """Enough of an asyncio transport for a protocol to start its login on."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


async def test_a_login_costs_less_than_the_budget_says() -> None:
    gateway = Gateway(make_settings(telnet_port=0, max_sockets=1000))
    assert gateway.telnet is not None
    service = gateway.telnet.service
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = []
        for _ in range(200):
            protocol = TelnetProtocol(service)
            protocol.connection_made(Socketless())  # type: ignore[arg-type]
            kept.append(protocol)
        per_login = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    for protocol in kept:
        protocol.connection_lost(None)
    await asyncio.sleep(0)
    # Its objects, and the longest line it may type at the prompt.
    assert per_login + LOGIN_LINE_BYTES <= TELNET_LOGIN_BYTES, per_login


def test_the_budget_counts_telnet_only_when_it_listens() -> None:
    lines = {line.structure: line for line in memory_budget(make_settings(), 1 << 30).lines}
    assert lines["telnet"].worst_case_bytes == lines["telnet_compressed"].worst_case_bytes == 0
    settings = make_settings(telnet_port=0, telnet_max_compressed=100)
    lines = {line.structure: line for line in memory_budget(settings, 1 << 30).lines}
    assert lines["telnet"].max_entries == settings.max_sockets
    assert lines["telnet_compressed"].max_entries == 100
    assert lines["telnet_compressed"].bytes_per_entry == mccp_bytes(10, 1)
    # The small zlib state is what makes MCCP2 affordable: zlib's defaults cost 20 times more.
    assert 5_000 < mccp_bytes(10, 1) < 16_000
    assert mccp_bytes(15, 8) > 20 * mccp_bytes(10, 1)
