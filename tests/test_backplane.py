"""The backplane on its own: a game's leases, held by one node of the cluster at a time, on a
real redis-server; and a Redis backplane stopped at any moment stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mudgate.backplane import LocalBackplane
from mudgate.hub import Hub

from .conftest import make_settings
from .redis_server import RedisServer, free_port

Node = Callable[..., Awaitable[Hub]]

LEASE = "mudgate:lease:bard"


@pytest.fixture
async def node(redis_server: RedisServer) -> AsyncIterator[Node]:
    """Start a node (a hub and its Redis backplane) on ``redis_server``; each is closed after
    the test."""
    hubs: list[Hub] = []

    async def start(**overrides: Any) -> Hub:
        settings = {"backplane": redis_server.url, "node_name": f"node{len(hubs)}", **overrides}
        hub = Hub(make_settings(**settings))
        hubs.append(hub)
        await hub.start()
        return hub

    yield start
    for hub in hubs:
        async with asyncio.timeout(10):
            await hub.close()


async def take_when_free(hub: Hub, name: str, ttl_seconds: float) -> None:
    """Ask for ``name`` until ``hub``'s node holds it (another node's lease runs out first)."""
    async with asyncio.timeout(5):
        while not await hub.backplane.hold_lease(name, ttl_seconds):
            await asyncio.sleep(0.01)


async def test_one_process_is_the_whole_cluster_and_always_holds_a_lease() -> None:
    backplane = LocalBackplane()
    assert await backplane.hold_lease("bard", 30)
    assert await backplane.hold_lease("bard", 30)


async def test_of_two_nodes_exactly_one_holds_a_lease_and_the_holder_renews_it(
    node: Node, redis_server: RedisServer
) -> None:
    a, b = await node(), await node()
    for _ in range(10):  # asking at once, as two nodes' timers do
        held = await asyncio.gather(
            a.backplane.hold_lease("bard", 60), b.backplane.hold_lease("bard", 60)
        )
        assert held in ([True, False], [False, True])
        if _ == 0:
            first = held
        assert held == first  # the same node, every time
    holder = a if first[0] else b
    with redis_server.client() as redis:
        assert redis.get(LEASE) == holder.backplane.node_id
        assert 0 < redis.pttl(LEASE) <= 60_000
        # A renewal restarts the lease for the TTL asked now.
        assert await holder.backplane.hold_lease("bard", 120)
        assert 60_000 < redis.pttl(LEASE) <= 120_000


async def test_another_node_takes_the_lease_over_once_the_stopped_holders_runs_out(
    node: Node, redis_server: RedisServer
) -> None:
    a, b = await node(), await node()
    assert await a.backplane.hold_lease("bard", 0.2)
    assert not await b.backplane.hold_lease("bard", 0.2)
    await a.close()  # nobody renews it now, as after a crash
    await take_when_free(b, "bard", 0.2)  # within the TTL
    with redis_server.client() as redis:
        assert redis.get(LEASE) == b.backplane.node_id


async def test_a_holder_whose_lease_ran_out_does_not_take_it_back_from_its_successor(
    node: Node, redis_server: RedisServer
) -> None:
    a, b = await node(), await node()
    assert await a.backplane.hold_lease("bard", 60)
    with redis_server.client() as redis:
        redis.pexpire(LEASE, 1)  # as if a stalled past its TTL
        await take_when_free(b, "bard", 60)
        assert not await a.backplane.hold_lease("bard", 60)
        assert redis.get(LEASE) == b.backplane.node_id


async def test_leases_are_keys_of_their_own_under_the_prefix_that_expire_on_their_own(
    node: Node, redis_server: RedisServer
) -> None:
    a = await node(redis_prefix="castle")
    assert await a.backplane.hold_lease("bard", 30)
    assert await a.backplane.hold_lease("weather:north", 30)
    with redis_server.client() as redis:
        leases = sorted(redis.scan_iter("castle:lease:*"))
        assert leases == ["castle:lease:bard", "castle:lease:weather:north"]
        assert all(0 < redis.pttl(key) <= 30_000 for key in leases)


async def test_a_node_that_cannot_reach_redis_holds_no_lease_and_does_not_raise(
    node: Node,
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    a = await node(backplane=nowhere, backplane_timeout=0.2)
    assert a.backplane.problem is not None
    assert not await a.backplane.hold_lease("bard", 30)


async def test_a_lease_key_redis_refuses_is_not_held_and_does_not_raise(
    node: Node, redis_server: RedisServer
) -> None:
    with redis_server.client() as redis:
        redis.hset(LEASE, "planted", "1")  # not a lease mudgate would have written
        a = await node()
        assert not await a.backplane.hold_lease("bard", 30)
        assert a.backplane.clustered  # the node stays in the cluster
        redis.delete(LEASE)
    assert await a.backplane.hold_lease("bard", 30)


async def test_one_process_makes_a_delivery_after_kept_events_at_once() -> None:
    made: list[str] = []
    LocalBackplane().after_kept(lambda: made.append("reply"))
    assert made == ["reply"]


async def test_a_redis_backplane_closed_as_soon_as_it_started_stops(node: Node) -> None:
    # Its first walk of the database is under way: a cancellation that lands as one of its
    # writes completes is lost on Python 3.11 (tasks.cancel_and_wait).
    for _ in range(3):
        a = await node()
        async with asyncio.timeout(5):
            await a.close()
