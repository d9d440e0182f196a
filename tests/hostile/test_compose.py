"""The shipped compose.yaml, run: a node started with its environment, on a real Redis, fits
the memory limit the file gives it, and says so (tests/test_containers.py checks the same
figures without a server)."""

from __future__ import annotations

from collections.abc import Callable

from ..redis_server import RedisServer
from ..test_containers import ENV_PREFIX, MIB, byte_size, nodes
from .gateway import Gateway


async def test_a_node_started_as_compose_starts_it_fits_its_memory_limit(
    gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    for name, service in nodes().items():
        settings = {
            variable.removeprefix(ENV_PREFIX).lower(): value
            for variable, value in service["environment"].items()
            if not str(value).startswith("${")  # the secrets: the tests' own
        }
        settings["backplane"] = redis_server.url
        server = gateway(**settings)
        report = server.memory()
        budget = report["memory_budget"]
        assert report["memory"]["limit_mb"] == byte_size(service["mem_limit"]) / MIB, name
        assert budget["fits"], (name, budget)
        assert not [record for record in server.records() if "caps allow" in record["event"]]
        server.stop()
