"""The memory budget: the worst case the caps allow, line by line, on top of the process."""

from __future__ import annotations

from mudgate.memory.budget import deflate_bytes, memory_budget

from ..conftest import make_settings

MIB = 1024 * 1024


def lines(**settings: object) -> dict[str, tuple[int, int]]:
    budget = memory_budget(make_settings(**settings), 512 * MIB, process_bytes=70 * MIB)
    return {line.structure: (line.max_entries, line.bytes_per_entry) for line in budget.lines}


def test_the_process_itself_is_the_first_line() -> None:
    budget = memory_budget(make_settings(), 512 * MIB, process_bytes=70 * MIB)
    assert budget.lines[0].structure == "process"
    assert budget.lines[0].worst_case_bytes == 70 * MIB
    assert budget.total_bytes == sum(line.worst_case_bytes for line in budget.lines)


def test_every_websocket_may_hold_one_message_as_text_of_4_bytes_a_character() -> None:
    assert lines(max_connections=100, max_message_bytes=4096)["messages_in_flight"] == (
        100,
        4 * 4096,
    )


def test_command_bodies_in_flight_are_capped_by_players_and_sockets() -> None:
    by_players = lines(max_players=10, max_commands_in_flight_per_player=2, max_sockets=1000)
    assert by_players["commands_in_flight"] == (20, 65536)
    by_sockets = lines(max_players=1000, max_sockets=50)
    assert by_sockets["commands_in_flight"][0] == 50


def test_every_socket_may_hold_its_buffers_a_read_a_body_and_a_head() -> None:
    entries, per_socket = lines(
        max_sockets=10,
        socket_send_buffer_bytes=8192,
        socket_receive_buffer_bytes=4096,
        write_buffer_bytes=16384,
        max_request_head_bytes=2048,
    )["sockets"]
    kernel = 2 * (8192 + 4096)
    one_read = 2 * 4096
    assert (entries, per_socket) == (10, kernel + one_read + 2 * 16384 + 2048)


def test_compressed_connections_count_only_when_compression_is_on() -> None:
    assert lines()["compressed_connections"] == (0, 0)
    entries, per_connection = lines(
        ws_per_message_deflate=True, max_compressed_connections=50, max_connections=20
    )["compressed_connections"]
    assert entries == 20  # no more than there may be connections
    assert per_connection == deflate_bytes(11, 4)


def test_a_smaller_window_costs_less_and_zlibs_defaults_cost_far_more() -> None:
    small, default, zlib_default = deflate_bytes(9, 1), deflate_bytes(11, 4), deflate_bytes(15, 8)
    assert small < default < zlib_default
    # zlib holds 2**(bits+2) + 2**(memLevel+9) to compress and 2**bits to decompress.
    assert 24 * 1024 < default < 48 * 1024
    assert zlib_default > 256 * 1024


def test_the_budget_says_which_line_is_largest_and_whether_it_fits() -> None:
    budget = memory_budget(make_settings(), 512 * MIB, process_bytes=70 * MIB)
    assert not budget.fits  # the defaults are for a large machine
    assert budget.largest().structure == "sockets"
    small = memory_budget(
        make_settings(
            max_sockets=100,
            max_connections=50,
            max_players=50,
            max_pending_bytes=MIB,
            max_rate_limit_keys=1000,
        ),
        512 * MIB,
        process_bytes=70 * MIB,
    )
    assert small.fits


def test_the_redis_write_queue_counts_only_with_a_backplane() -> None:
    assert lines()["backplane_queue"] == (0, lines()["backplane_queue"][1])
    entries, queued = lines(
        backplane="redis://127.0.0.1:6379/0", backplane_queue_bytes=MIB, backplane_queue_size=100
    )["backplane_queue"]
    assert entries == 1
    assert MIB < queued < MIB + 100 * 1024
