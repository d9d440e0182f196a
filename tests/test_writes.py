"""The queue of what a node writes to Redis: capped in commands and in bytes."""

from __future__ import annotations

import asyncio

from mudgate.backplane.writes import WriteQueue, command_bytes


def opened(capacity: int, capacity_bytes: int) -> WriteQueue:
    queue = WriteQueue(capacity, capacity_bytes)
    queue.open = True
    return queue


def test_a_command_counts_the_bytes_of_its_arguments() -> None:
    assert command_bytes(("PUBLISH", "mudgate:room:lobby", b"x" * 100)) == 7 + 18 + 100


def test_past_its_byte_cap_the_oldest_commands_are_dropped() -> None:
    queue = opened(capacity=100, capacity_bytes=1000)
    for _ in range(5):
        queue.put(("PUBLISH", "c", b"x" * 300))
    assert len(queue) == 3
    assert queue.bytes <= 1000
    assert queue.dropped == 2


def test_one_command_larger_than_the_cap_is_still_written() -> None:
    queue = opened(capacity=100, capacity_bytes=10)
    queue.put(("PUBLISH", "c", b"x" * 300))
    assert len(queue) == 1
    queue.put(("PUBLISH", "c", b"y"))
    assert len(queue) == 1  # the large one made room for the next
    assert queue.take_all() == [("PUBLISH", "c", b"y")]
    assert queue.bytes == 0


def test_past_its_count_the_oldest_command_is_dropped() -> None:
    queue = opened(capacity=2, capacity_bytes=10**6)
    for number in range(3):
        queue.put(("PUBLISH", "c", bytes([number])))
    assert [command[2] for command in queue.take_all()] == [b"\x01", b"\x02"]
    assert queue.dropped == 1


def test_nothing_is_queued_while_redis_is_away() -> None:
    queue = WriteQueue(10, 1000)
    queue.put(("PUBLISH", "c", b"x"))
    assert (len(queue), queue.bytes, queue.dropped) == (0, 0, 1)
    queue.open = True
    queue.put(("PUBLISH", "c", b"x"))
    queue.close()
    assert (len(queue), queue.bytes, queue.dropped) == (0, 0, 2)


def test_whoever_queued_a_command_is_shown_each_one_dropped_unwritten() -> None:
    dropped: list[tuple[object, ...]] = []
    queue = WriteQueue(2, 10**6, dropped=dropped.append)
    queue.put(("PUBLISH", "c", b"away"))  # Redis is away
    queue.open = True
    for number in range(3):
        queue.put(("PUBLISH", "c", bytes([number])))  # past the count
    queue.close()  # Redis went away with two still queued
    assert [command[2] for command in dropped] == [b"away", b"\x00", b"\x01", b"\x02"]
    assert queue.dropped == 4


class HeldPipeline:
    """A Redis pipeline whose round trip waits until the test lets it go."""

    def __init__(self, release: asyncio.Event) -> None:
        self.release = release
        self.commands: list[tuple[object, ...]] = []

    async def __aenter__(self) -> HeldPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def execute_command(self, *command: object) -> None:
        self.commands.append(command)

    async def execute(self, raise_on_error: bool = True) -> list[object]:
        await self.release.wait()
        return [b"OK"] * len(self.commands)


class HeldRedis:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    def pipeline(self, transaction: bool = True) -> HeldPipeline:
        return HeldPipeline(self.release)


async def test_a_batch_on_its_way_counts_against_the_byte_cap_until_written() -> None:
    queue = opened(capacity=100, capacity_bytes=1000)
    for _ in range(3):
        queue.put(("PUBLISH", "c", b"x" * 292))  # 300 bytes each
    redis = HeldRedis()
    writing = asyncio.create_task(queue.write(redis))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert (len(queue), queue.bytes) == (0, 900)  # taken, not yet written
    queue.put(("PUBLISH", "c", b"y" * 292))
    queue.put(("PUBLISH", "c", b"z" * 292))
    # 900 on the way: of what waits, only the newest stays.
    assert (len(queue), queue.dropped) == (1, 1)
    redis.release.set()
    await writing
    assert (len(queue), queue.bytes) == (0, 0)


async def test_a_write_until_a_mark_leaves_what_was_queued_after_it_for_the_next_turn() -> None:
    queue = opened(capacity=3, capacity_bytes=10**6)
    queue.put(("PUBLISH", "c", b"dropped"))
    queue.put(("PUBLISH", "c", b"before"))
    mark = queue.mark()
    queue.put(("PUBLISH", "c", b"after"))
    queue.put(("PUBLISH", "c", b"later"))  # the oldest is dropped: only the front ever is
    redis = HeldRedis()
    redis.release.set()
    await queue.write(redis, mark)  # type: ignore[arg-type]
    assert [command[2] for command in queue.take_all()] == [b"after", b"later"]
