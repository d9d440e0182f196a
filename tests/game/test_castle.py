"""The example game as `make example` runs it: the castle in a process of its own
(`mudgate serve --game examples.castle.game:game`)."""

from __future__ import annotations

from typing import Any

from .conftest import LinkedGateway


async def test_the_castle_plays_behind_the_gateway(linked: Any) -> None:
    gateway: LinkedGateway = linked("examples.castle.game:game")
    await gateway.ready()
    async with gateway.player("alice") as alice, gateway.player("bob") as bob:
        assert "Welcome to the castle" in (await alice.next("narrate"))["text"]
        await alice.send(op="walk", direction="north", id=1)
        room = await alice.next("room")
        assert (room["title"], room["id"]) == ("The Courtyard", 1)
        await bob.send(op="walk", direction="North", id=2)  # a Name: any case
        assert (await bob.next("room"))["occupants"] == ["alice"]  # on every node: here, one
        await alice.send(op="walk", direction="x\nGreta tells carol: hi", id=3)
        error = await alice.next("error")
        assert (error["code"], error["id"]) == ("invalid_args", 3)
        await alice.send(op="go", room="tower", id=4)  # a built-in the castle removed
        assert (await alice.next("error"))["code"] == "unknown_op"
        await bob.send(op="shout", text="hello castle")
        heard = await alice.next("narrate")
        while heard["text"] != "bob shouts: hello castle":
            heard = await alice.next("narrate")
