"""Write BENCHMARKS.md from the JSON the benchmarks left in bench/results/.

python bench/report.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine(result: dict[str, Any]) -> str:
    m = result["machine"]
    return f"{m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}"


def met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def broadcast_section(broadcast: dict[str, Any]) -> list[str]:
    lines = [
        "## Broadcast: one player talks in a room of N",
        "",
        f"`python bench/broadcast.py` — {broadcast['messages']} messages, "
        f"{broadcast['repeat']} runs, {machine(broadcast)}. Healthy clients only, no "
        "compression, a 60 s heartbeat everywhere, one server process each. **Server CPU per "
        "delivery** is the server process's own user + system time over the run divided by "
        "the deliveries: what other work on this shared machine does not move. Deliveries/s "
        "does move with it, and is capped by the load generator (one Python process reading "
        "every client; its CPU is shown: at ~100 % it, not the server, is the limit).",
        "",
        "| players | server | server CPU per delivery | deliveries/s | p50 | p99 | load generator CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts: list[str] = []
    for players, by in broadcast["results"].items():
        ours = by["mudgate"]
        for server, r in by.items():
            cost = r.get("server_cpu_us_per_delivery")
            lines.append(
                f"| {players} | {server} | "
                + ("—" if cost is None else f"{cost:.1f} µs")
                + f" | {r['deliveries_per_second']:,.0f} "
                f"({r['min_deliveries_per_second']:,}–{r['max_deliveries_per_second']:,}) "
                f"| {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['client_cpu_percent']:.0f} % |"
            )
        for peer, r in by.items():
            if peer == "mudgate" or "server_cpu_us_per_delivery" not in r:
                continue
            cost = ours["server_cpu_us_per_delivery"] / r["server_cpu_us_per_delivery"]
            rate = ours["deliveries_per_second"] / r["deliveries_per_second"]
            lines.append(
                f"| {players} | **mudgate / {peer}** | **{cost:.2f}** | **{rate:.2f}** | | | |"
            )
        docs = by.get("fastapi-docs")
        if docs and "server_cpu_us_per_delivery" in docs:
            cost = ours["server_cpu_us_per_delivery"] / docs["server_cpu_us_per_delivery"]
            rate = ours["deliveries_per_second"] / docs["deliveries_per_second"]
            verdicts.append(
                f"- N = {players}: server CPU per delivery ≤ the FastAPI docs pattern's: "
                f"{met(cost <= 1.0)} ({cost:.2f}×); deliveries/s ≥ it: {met(rate >= 1.0)} "
                f"({rate:.2f}×)"
            )
        node = by.get("node-ws")
        if node and "server_cpu_us_per_delivery" in node:
            cost = ours["server_cpu_us_per_delivery"] / node["server_cpu_us_per_delivery"]
            verdicts.append(
                f"- N = {players}: within 1.25× of Node `ws` per delivery: "
                f"{met(cost <= 1.25)} ({cost:.2f}×)"
            )
    lines += [
        "",
        "Ratios are mudgate's figure over the peer's: below 1 is cheaper for CPU, above 1 "
        "faster for deliveries/s. Targets:",
        "",
        *verdicts,
        "",
        "How mudgate gets there: a message is encoded once, its WebSocket frame is built once "
        "(`Outgoing.frame`) and the same bytes go to every recipient. A recipient with nothing "
        "queued whose socket is below its write buffer's high-water mark gets them written "
        "straight to the transport (mudgate's server offers this beside ASGI, as a "
        "`FrameWriter` in the scope): no task, no future, no ASGI message per recipient. Only "
        "a recipient under backpressure queues, in its capped outbox, for a writer task of its "
        "own; so isolation is kept (the stalled-client table below). What is left per delivery "
        "is mostly the `send` system call itself, as for Node (`python bench/"
        "profile_broadcast.py` shows where the rest goes). The FastAPI docs pattern awaits each "
        "client's send in turn; python-socketio encodes and queues per client.",
        "",
    ]
    return lines


def cluster_section(cluster: dict[str, Any]) -> list[str]:
    lines = [
        "## Broadcast across nodes (Redis backplane) and on every core",
        "",
        f"`python bench/cluster_broadcast.py` — a room of {cluster['players']:,}, "
        f"{cluster['messages']} messages, {cluster['repeat']} runs, {machine(cluster)}. "
        "Nodes, redis-server and the load generator share the machine. Server CPU is every "
        "mudgate process's together (not Redis's).",
        "",
        "| setup | server CPU per delivery | deliveries/s | p50 | p99 | load generator CPU | deliveries/s vs in-process |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = cluster["ratios_to_in_process"]
    for setup, r in cluster["results"].items():
        cost = r.get("server_cpu_us_per_delivery")
        lines.append(
            f"| {setup} | " + ("—" if cost is None else f"{cost:.1f} µs") + " | "
            f"{r['deliveries_per_second']:,.0f} "
            f"({r['min_deliveries_per_second']:,}–{r['max_deliveries_per_second']:,}) "
            f"| {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['client_cpu_percent']:.0f} % "
            f"| {ratios.get(setup, 1.0):.2f} |"
        )
    lines += [
        "",
        "`redis-1-node` is one node whose every message also goes through Redis (and comes "
        "back, to be skipped): what the backplane costs. With `redis-2-nodes` half the room "
        "is on each node and each node fans out to its own half, on its own core. `workers-2` "
        "is `mudgate serve --workers 2`: the same two nodes on one port, the kernel "
        "(`SO_REUSEPORT`) spreading the players between them.",
        "",
        "### Every core: workers",
        "",
    ]
    results = cluster["results"]
    if "workers-2" in results and "in-process" in results:
        one = results["in-process"]["server_cpu_us_per_delivery"]
        two = results["workers-2"]["server_cpu_us_per_delivery"]
        efficiency = one / two
        lines += [
            "A broadcast costs a little once per message (decode the frame, run the command, "
            "encode the event, one `PUBLISH`; on every other worker, one read of it from "
            "Redis) and the rest once per delivery (one frame written to one socket). With W "
            "workers each fans out to its own players only: the deliveries, nearly all the "
            "work for a room of 1,000, are shared out, while the per-message part is paid on "
            "every worker. The table measures what that costs: all processes together spend "
            f"**{two:.1f} µs of CPU per delivery with two workers against {one:.1f} µs in one "
            f"process** ({efficiency:.0%} as efficient), the difference being the Redis hop and "
            "the per-message work repeated. So W cores deliver about W × "
            f"{efficiency:.2f} times what one does: **{2 * efficiency:.1f}× on 2 idle cores, "
            f"about {16 * efficiency:.0f}× on 16** for large rooms. Less for small rooms, where "
            "the per-message part (repeated on every worker) is most of the work, and Redis "
            "sets a ceiling on messages (one core of its own; every message is one PUBLISH "
            "and one delivery to each worker).",
            "",
            f"Target (DESIGN.md §10): `--workers 2` on 2 cores ≥ 1.6× one worker's deliveries/s "
            f"for a room of 1,000: {met(results['workers-2']['deliveries_per_second'] >= 1.6 * results['in-process']['deliveries_per_second'])} "
            f"on this machine ({cluster['ratios_to_in_process'].get('workers-2', 0):.2f}×). "
            "What stands in the way here is the machine: the load generator alone needs most "
            "of a core to read 50,000+ deliveries/s, so the two workers and Redis share what "
            "is left of two cores (see the load generator's CPU column); the server CPU per "
            "delivery above is the figure that carries to a machine with cores to spare.",
            "",
        ]
    return lines


# The floods of issue 18 (a message in fragments, compression, request bodies): bench/hostile.py
# reports what each attack got back.
MESSAGE_FLOODS = ("fragments", "deflate", "slow bodies")


def growth(r: dict[str, Any]) -> float:
    """RSS the server grew by at the flood's peak, MiB."""
    return float(r["rss_peak_mib"] - r["rss_before_mib"])


def ratio(ours: float, theirs: float, floor: float) -> str:
    """mudgate's figure over the peer's, or a dash where the peer's is below ``floor`` (too
    small for a ratio to mean anything)."""
    return f"{ours / theirs:.2f}" if theirs >= floor else "—"


def ended(how: str) -> str:
    """How bench/hostile.py says a WebSocket ended ("1008 message in too many frames", "still
    open"), in words."""
    code, _, reason = how.partition(" ")
    if code.isdigit():
        return f'closed {code} "{reason}"' if reason else f"closed {code}"
    return "still open at the end" if how == "still open" else how


def got_back(r: dict[str, Any]) -> str:
    """What one of issue 18's attacks got back, in words."""
    attack = r["attack"]
    parts = [f"{count:.0f} {ended(what)}" for what, count in attack.get("ends", {}).items()]
    if "compressed" in attack:
        compressed = attack["compressed"]
        before = r.get("rss_peak_before_mib", {}).get("bomb")
        each = (
            f", {(before - r['rss_before_mib']) * 1024 / compressed:.0f} KiB of RSS each "
            "before the bomb"
            if before is not None and compressed
            else ""
        )
        parts.append(f"{compressed:.0f} of {attack['connections'] + 1:.0f} compressed{each}")
        parts += [f"the bomb: {ended(what)}" for what in attack.get("bomb", {})]
        if attack.get("talker_dropped"):
            parts.append(f"the talker dropped {attack['talker_dropped']:.0f} times")
    answers = attack.get("answers", {})
    if answers:
        held = answers.get("held", 0)
        others = ", ".join(
            f"{count:,.0f} answered {status}" if status.isdigit() else f"{count:,.0f} {status}"
            for status, count in answers.items()
            if status != "held"
        )
        parts.append(
            f"{attack['requests']:,.0f} requests: {held:,.0f} held"
            + (f", {others}" if others else "")
        )
    return "; ".join(parts)


def hostile_section(hostile: dict[str, Any]) -> list[str]:
    results = hostile["results"]
    lines = [
        "## Hostile floods",
        "",
        f"`python bench/hostile.py` — each flood runs {hostile['seconds']:g} s from "
        f"loopback against a fresh server, {hostile['repeat']} run(s), contenders alternating, "
        f"{machine(hostile)}. Four healthy players ping in turn every 25 ms throughout (the "
        "docs pattern can only answer one by broadcasting it, to the attackers' WebSockets "
        "too); a newcomer connects a second before the end (how long its welcome took: "
        "whether players still get in). RSS is the server's before the flood, at its peak, "
        "and 2 s after it ended; CPU is the server's own during the flood.",
        "",
        "| flood | server | healthy ping p50 | p99 | unanswered, dropped | newcomer's welcome "
        "| RSS before → peak → after | server CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack, by_server in results.items():
        for server, r in by_server.items():
            newcomer = r.get("newcomer_ms", math.nan)
            lines.append(
                f"| {attack} | {server} | {r['ping_p50_ms']:.1f} ms | {r['ping_p99_ms']:.1f} ms "
                f"| {r['unanswered']:.0f}, {r['disconnected']:.0f} "
                + ("| none in 5 s " if math.isnan(newcomer) else f"| {newcomer:.1f} ms ")
                + f"| {r['rss_before_mib']:.0f} → {r['rss_peak_mib']:.0f} → "
                f"{r['rss_after_mib']:.0f} MiB | {r['server_cpu_seconds']:.2f} s |"
            )
    worst = max(results, key=lambda attack: results[attack]["mudgate"]["ping_p99_ms"])
    worst_p99 = results[worst]["mudgate"]["ping_p99_ms"]
    kept = max(
        results,
        key=lambda attack: (
            results[attack]["mudgate"]["rss_after_mib"]
            / results[attack]["mudgate"]["rss_before_mib"]
        ),
    )
    ours = results[kept]["mudgate"]
    grown = ours["rss_after_mib"] / ours["rss_before_mib"] - 1
    trimmed = (
        f"; after a forced cleanup (which runs `malloc_trim`) "
        f"{ours['rss_after_trim_mib'] / ours['rss_before_mib'] - 1:+.0%}"
        if "rss_after_trim_mib" in ours
        else ""
    )
    over = [
        f"{attack} ({by['mudgate']['ping_p99_ms']:.0f} ms)"
        for attack, by in results.items()
        if by["mudgate"]["ping_p99_ms"] > 50
    ]
    lines += [
        "",
        "Target: the healthy player's p99 ≤ 50 ms during every flood, and RSS back within "
        "10 % of its start after it. mudgate's p99: "
        + (
            f"{met(False)} in {len(over)} of {len(results)} floods: {', '.join(over)}"
            if over
            else f"{met(True)} (worst {worst_p99:.1f} ms, in {worst})"
        )
        + f"; RSS 2 s after a flood at most {grown:+.0%} of its start, in {kept} "
        f"({met(grown <= 0.10)}{trimmed}). Every flood is bounded here so that the peer "
        "survives it; `tests/hostile/` runs each against `mudgate serve` with the assertions.",
        "",
    ]
    floods = [attack for attack in results if attack.startswith(MESSAGE_FLOODS)]
    if floods:
        lines += message_floods(floods, results)
    lines += budget_section(results)
    return lines


def message_floods(floods: list[str], results: dict[str, Any]) -> list[str]:
    lines = [
        "### A message in fragments, compressed, or as a request body",
        "",
        'The floods of the issue "hostile clients" that cost memory while a message arrives: '
        "**fragments**, WebSockets that each send one message as 2-byte continuation frames "
        "(60 KB on the wire, 7,500 frames) and never its last; **deflate**, WebSockets that "
        "ask for compression (mudgate with `MUDGATE_WS_PER_MESSAGE_DEFLATE=true`; uvicorn "
        "offers it by default, with a 4 KiB window) in a room where a talker speaks, each "
        "saying one compressed line, and at 70 % of the flood one inflate bomb (a 50 KB frame "
        "that inflates to 50 MiB); **slow bodies**, 50 players who open their stream "
        "(mudgate: `GET /events`; the docs pattern: its WebSocket) and then send 20 "
        "`POST /commands` each, declaring 60,000 bytes and sending all but the last ten (the "
        "docs pattern's peer reads the body with `await request.json()`). The ratio rows are "
        "mudgate's figure over the docs pattern's (a dash where the docs pattern's is too small "
        "to divide by).",
        "",
        "| flood | server | ping p50 | p99 | RSS growth at peak | server CPU "
        "| what the attack got back |",
        "|---|---|---|---|---|---|---|",
    ]
    for attack in floods:
        by_server = results[attack]
        for server, r in by_server.items():
            lines.append(
                f"| {attack} | {server} | {r['ping_p50_ms']:.1f} ms | {r['ping_p99_ms']:.1f} ms "
                f"| {growth(r):+.1f} MiB | {r['server_cpu_seconds']:.2f} s | {got_back(r)} |"
            )
        ours, docs = by_server["mudgate"], by_server.get("fastapi-docs")
        if docs:
            lines.append(
                f"| {attack} | **mudgate / fastapi-docs** "
                f"| **{ratio(ours['ping_p50_ms'], docs['ping_p50_ms'], 0.01)}** "
                f"| **{ratio(ours['ping_p99_ms'], docs['ping_p99_ms'], 0.01)}** "
                f"| **{ratio(growth(ours), growth(docs), 0.5)}** "
                f"| **{ratio(ours['server_cpu_seconds'], docs['server_cpu_seconds'], 0.05)}** | |"
            )
    lines += ["", *flood_notes(floods, results), ""]
    return lines


# What holds the healthy player up where mudgate misses its p99 target in one of these floods
# (profiled for this report; bench/profile_broadcast.py shows how).
SLOW_BECAUSE = {
    "fragments": "the turn of the event loop in which the 100 connections start: each is "
    "parsed frame by frame up to its 128-frame cap (about 0.5 ms a connection), and that turn "
    "holds every connection's",
    "slow bodies": "the burst of requests: the 1,000 arrive within milliseconds, and each "
    "refused one costs a full pass through FastAPI (middleware, the bearer-token dependency, "
    "the 429 body) in the turn it arrived in, so a ping that lands behind them waits for all; "
    "the docs pattern takes each request only as far as `await request.json()`",
}


def flood_notes(floods: list[str], results: dict[str, Any]) -> list[str]:
    """What the table means, flood by flood, from the figures."""
    notes = []
    for attack in floods:
        ours, docs = results[attack]["mudgate"], results[attack].get("fastapi-docs")
        kind = next(kind for kind in MESSAGE_FLOODS if attack.startswith(kind))
        if kind == "fragments":
            count = ours["attack"]["connections"]
            note = (
                f"- **fragments**: mudgate closed {ours['sockets'].get('fragment_flood', 0):.0f} "
                f"of {count:.0f} connections at `MUDGATE_MAX_MESSAGE_FRAGMENTS` (128 frames) and "
                f"grew {growth(ours) * 1024 / count:.0f} KiB per attacking connection at its "
                "peak (its budget for a message: "
                f"{ours['budget']['lines']['messages_in_flight']['bytes_per_entry'] / 1024:.0f} KiB "
                "a connection)."
            )
            if docs:
                note += (
                    f" The docs pattern read every frame and held them: "
                    f"{growth(docs) * 1024 / count:.0f} KiB per connection for 60 KB sent (uvicorn "
                    "keeps a bytes object per fragment until the message ends)."
                )
        elif kind == "deflate":
            count = ours["attack"]["compressed"]
            each = (ours["rss_peak_before_mib"]["bomb"] - ours["rss_before_mib"]) * 1024 / count
            zlib = ours["budget"]["lines"]["compressed_connections"]["bytes_per_entry"] / 1024
            note = (
                f"- **deflate**: each compressed connection cost mudgate {each:.0f} KiB of RSS, "
                f"its WebSocket included (the budget: {zlib:.0f} KiB of zlib state on top of "
                "an idle WebSocket's 11 KiB); the bomb: "
                + ", ".join(ended(how) for how in ours["attack"]["bomb"])
                + "."
            )
            if docs:
                theirs = docs["rss_peak_before_mib"]["bomb"] - docs["rss_before_mib"]
                bomb = docs["rss_peak_mib"] - docs["rss_peak_before_mib"]["bomb"]
                kept = docs["rss_after_mib"] - docs["rss_peak_before_mib"]["bomb"]
                note += (
                    f" The docs pattern: {theirs * 1024 / count:.0f} KiB per compressed "
                    "connection, and the bomb inflated up to uvicorn's `ws_max_size` (16 MiB) "
                    f"before its 1009: RSS +{bomb:.0f} MiB after the bomb, {kept:+.0f} MiB of it "
                    "still there 2 s after the flood."
                )
        else:
            answers = ours["attack"]["answers"]
            note = (
                f"- **slow bodies**: mudgate held {answers.get('held', 0):.0f} requests "
                "(`MUDGATE_MAX_COMMANDS_IN_FLIGHT_PER_PLAYER` 2 each, "
                "`..._PER_ADDRESS` 16: every attacker here is 127.0.0.1) and answered "
                f"{answers.get('429', 0):,.0f} with 429; a newcomer got its welcome in "
                f"{ours['newcomer_ms']:.1f} ms."
            )
            if docs:
                held = docs["attack"]["answers"].get("held", 0)
                note += (
                    f" The docs pattern held all {held:,.0f}, "
                    f"{growth(docs) * 1024 / max(1, held):.0f} KiB each at its peak."
                )
        if ours["ping_p99_ms"] > 50:
            note += f" mudgate's p99 comes from {SLOW_BECAUSE[kind]}."
        notes.append(note)
    return notes


def budget_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "### The memory budget against each flood",
        "",
        "For each flood, the lines of mudgate's `memory_budget` (`GET /monitoring/memory`, "
        "read from the server under attack) that what the flood opened falls in, each line's "
        "`bytes_per_entry` times the entries the flood made: its attackers' sockets, "
        "connections, messages arriving, commands under way and compressed connections, with "
        "the four healthy players and the newcomer. Beside it, the RSS the server grew by at "
        "the flood's peak. The budget's sockets line also counts what the kernel may hold "
        "for each socket (`SO_SNDBUF` and `SO_RCVBUF`, doubled), which RSS does not show: "
        "RSS is held to the rest, the process's share.",
        "",
        "| flood | budget lines (entries of bytes each) | worst case | of it in the kernel "
        "| the process's share | measured RSS growth at peak | of the share |",
        "|---|---|---|---|---|---|---|",
    ]
    over = []
    for attack, by_server in results.items():
        r = by_server["mudgate"]
        budget = r.get("budget")
        if not budget:
            continue
        described = ", ".join(
            f"{structure} {line['entries']:,.0f} of {line['bytes_per_entry'] / 1024:,.0f} KiB"
            for structure, line in budget["lines"].items()
        )
        share = budget["worst_case_mib"] - budget["kernel_mib"]
        if growth(r) > share:
            over.append(attack)
        lines.append(
            f"| {attack} | {described} | {budget['worst_case_mib']:,.1f} MiB "
            f"| {budget['kernel_mib']:,.1f} MiB | {share:,.1f} MiB | {growth(r):+.1f} MiB "
            f"| {growth(r) / share:.0%} |"
        )
    lines += [
        "",
        (
            "Every flood stays within what the budget says: "
            + met(not over)
            + ". The budget is a worst case: every socket with its buffers full, every "
            "outbox full, every message at `MUDGATE_MAX_MESSAGE_BYTES`; a flood that grows "
            "RSS by a few percent of it is what a cap that holds looks like."
        )
        if not over
        else "**Over the budget** (a bug in the budget, not in the bench): "
        + ", ".join(over)
        + ".",
        "",
    ]
    return lines


def game_split_section(split: dict[str, Any]) -> list[str]:
    results, ratios = split["results"], split["ratios_split_to_in_process"]
    lines = [
        "## The game in a process of its own: what the split costs",
        "",
        f"`python bench/game_split.py` — {split['players']} players in one room, "
        f"{split['rate']:,.0f} commands/s in all, paced ({split['commands']:,} a run), "
        f"{split['repeat']} run(s) of each setup, alternating, {machine(split)}. The same game "
        "(`bench/bench_game.py`: `act` answers its sender and tells the room) in the gateway's "
        "process (`Gateway(settings, game=game)`) and in one of its own (`mudgate serve "
        "--game`). Server CPU is the processes' own user + system time (psutil) over the run: "
        "the gateway's and, split, the game process's beside it; per command, and per room "
        "delivery (the same CPU over the deliveries). Latency is client-side, from a "
        "command's send to the reply carrying its id. Machine CPU is all cores' over the "
        "run, other work on this shared machine included.",
        "",
        "| setup | gateway CPU per command | game process CPU per command "
        "| server CPU per command | server CPU per room delivery | p50 | p99 "
        "| load generator CPU | machine CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setup, r in results.items():
        game = r["game_cpu_us_per_command"]
        lines.append(
            f"| {setup} | {r['gateway_cpu_us_per_command']:.0f} µs "
            + ("| — " if not game else f"| {game:.0f} µs ")
            + f"| {r['server_cpu_us_per_command']:.0f} µs "
            f"({r['min_server_cpu_us_per_command']:.0f}–{r['max_server_cpu_us_per_command']:.0f}) "
            f"| {r['server_cpu_us_per_delivery']:.2f} µs | {r['p50_ms']:.2f} ms "
            f"| {r['p99_ms']:.1f} ms | {r['client_cpu_percent']:.0f} % "
            f"| {r['machine_cpu_percent']:.0f} % |"
        )
    lines.append(
        f"| **split / in-process** | **{ratios['gateway_cpu_us_per_command']:.2f}** | "
        f"| **{ratios['server_cpu_us_per_command']:.2f}** "
        f"| **{ratios['server_cpu_us_per_delivery']:.2f}** | **{ratios['p50_ms']:.2f}** "
        f"| **{ratios['p99_ms']:.2f}** | | |"
    )
    extra = split["split_extra_us_per_command"]
    wrong = {
        what: sum(r[what] for r in results.values())
        for what in ("unanswered", "answered_twice", "errors", "room_deliveries_missing")
    }
    lines += [
        "",
        "What the split adds is per command, not per delivery: "
        f"{extra['server_cpu_us_per_command']:.0f} µs of CPU in all "
        f"({extra['gateway_cpu_us_per_command']:.0f} µs of it in the gateway), "
        "for the command framed to the game, and its reply and room event decoded from the "
        "link and stamped by the gateway; the room's deliveries cost the same either way. So "
        "the ratio shrinks as rooms grow and grows as they shrink: for a command answered to "
        "its sender alone, the split's cost is that figure on top of the in-process one. "
        "Every command answered exactly once, every room event delivered, in every run: "
        + met(not any(wrong.values()))
        + (
            ""
            if not any(wrong.values())
            else " (" + ", ".join(f"{what} {count}" for what, count in wrong.items() if count) + ")"
        )
        + ".",
        "",
    ]
    return lines


def game_restart_section(restart: dict[str, Any]) -> list[str]:
    results = restart["results"]
    limits = restart["rate_limits"]
    lines = [
        "## A game restart under load",
        "",
        f"`python bench/game_restart.py` — players in rooms of {restart['room_size']}, each "
        f"sending `act` with an id every {restart['interval_seconds'] * 1000:.0f} ms to "
        "`mudgate serve --game` (the bench game), with the default per-player rate limits "
        f"({float(limits['MUDGATE_PLAYER_MESSAGES_PER_SECOND']):g} frames/s, a burst of "
        f"{limits['MUDGATE_PLAYER_MESSAGE_BURST']}); after {restart['warmup_seconds']:g} s the "
        f"gateway gets SIGHUP, {restart['restarts_per_load']} times, each followed by "
        f"{restart['after_seconds']:g} s of play once every player has had `game_ready`; "
        f"{machine(restart)}. During a restart is from the SIGHUP to the last player's "
        "`game_ready` (by when a command was sent); the restart's duration is SIGHUP to "
        "`game_ready` as the players see it (the median over the restarts).",
        "",
        "| players | commands/s | disconnected | unanswered | answered twice | errors "
        "| p99 outside a restart | p99 during | worst during | restart "
        "| gateway RSS before → after | CPU: machine, server, load generator | saturated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    broken = []
    handover = [
        x["took_over_ms"] - x["attached_ms"]
        for r in results.values()
        for x in r["restarts"]
        if x["attached_ms"] is not None and x["took_over_ms"] is not None
    ]
    for players, r in results.items():
        errors = ", ".join(f"{code} {count:,}" for code, count in r["errors"].items()) or "0"
        steady = r["steady"]
        lines.append(
            f"| {players} | {r['commands_per_second']:,} | {r['disconnected']} "
            f"| {r['unanswered']} | {r['answered_twice']} | {errors} "
            f"| {r['p99_ms_outside']:.1f} ms | {r['p99_ms_during']:.1f} ms "
            f"| {r['max_ms_during']:.0f} ms | {r['restart_ms']:,.0f} ms"
            + (f" ({r['restarts_failed']} failed)" if r["restarts_failed"] else "")
            + f" | {r['gateway_rss_before_mib']:.1f} → {r['gateway_rss_after_mib']:.1f} MiB "
            f"| {steady.get('machine_percent', math.nan):.0f} %, "
            f"{steady.get('server_cores', math.nan):.2f} cores, "
            f"{steady.get('client_percent', math.nan):.0f} % "
            f"| {'; '.join(r['saturated']) or 'no'} |"
        )
        if r["disconnected"] or r["unanswered"] or r["answered_twice"] or r["restarts_failed"]:
            broken.append(players)
    saturated = [players for players, r in results.items() if r["saturated"]]
    lines += [
        "",
        "Target: no player disconnected, every command answered exactly once, across every "
        "restart: "
        + met(not broken)
        + (f" (not at {', '.join(broken)} players)" if broken else "")
        + ". "
        + (
            f"**Saturated** at {', '.join(saturated)} players (the last column says by what): "
            "there the latencies are the machine's queue as much as the restart's"
            + (
                "; read them from the lower load. "
                if len(saturated) < len(results)
                else ", at every load measured. "
            )
            if saturated
            else "The machine was not saturated at any load (its CPU, the load generator's "
            "and the sender's schedule all had room). "
        )
        + (
            "Until the new process says hello the old one answers every command; from then "
            "until it takes over, commands wait for it: "
            + (
                f"at most {max(handover):.0f} ms here (`/monitoring/game` polled every 10 ms "
                "or so). "
                if handover
                else "too short here for `/monitoring/game`, polled every 10 ms or so, to show. "
            )
        )
        + "CPU is over the warm-up: the machine's, all cores and other work on this shared "
        "machine included; the server's (the gateway and its game) in cores; the load "
        "generator's, of one core. A player at one command every 100 ms sends at the "
        "default rate limit itself, not under it: the bucket stays full only because its burst absorbs the "
        "jitter (up to 3 s of being late and then catching up), and a `rate_limited` in the "
        "errors column would say it did not.",
        "",
    ]
    return lines


RECONNECT_SCENARIOS = {
    "after-exit": "started once the old one exited",
    "at-sigterm": "started at the SIGTERM",
}


def reconnect_section(spread: dict[str, Any]) -> list[str]:
    medians = spread["medians"]
    backoff = spread["backoff"]
    lines = [
        "## Reconnects after a restart",
        "",
        f"`python bench/reconnect_spread.py` — {spread['clients']:,} clients on a real "
        f"`mudgate serve` (`MUDGATE_SHUTDOWN_TIMEOUT` {spread['shutdown_timeout_s']:g} s, "
        f"`MUDGATE_RECONNECT_WINDOW` {spread['reconnect_window_s']:g} s), which gets SIGTERM; "
        "a new server is started on the same port once the old one has exited (as systemd or a "
        "container restarts it) or at the SIGTERM (a hand-over: it listens while the old one "
        "drains). The old one closes its players with 1012 in batches over 70 % of its "
        "timeout. Each client waits uniform(0, window) before reconnecting (the window from "
        "the 1012's reason), or not at all without jitter, and after every failed attempt "
        f"backs off {backoff['base_s']:g} s × 2^n (at most {backoff['cap_s']:g} s, "
        f"×{backoff['jitter'][0]}–{backoff['jitter'][1]}); {spread['repeat']} run(s) each, "
        f"medians, {machine(spread)}. Times are from the SIGTERM to a client's welcome from "
        "the new server; after listening, from when the new server listened; the handshake, "
        "from a successful attempt's connect to its welcome. Server CPU is the new server's "
        "from when it listened to the last welcome: a storm spread over more seconds counts "
        "more of the server's own background work too.",
        "",
        "| new server | clients' delay | new server listening | p50 | p99 | last "
        "| spread p1–p99 | p50 / p99 after listening | most in 100 ms | handshake p50 / p99 "
        "| failed attempts before / after listening | refused by the server "
        "| listen overflows | server CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in medians.items():
        scenario, mode = name.split("/")
        runs = spread["runs"][name]
        refused = sum(sum(r["server_refusals"].values()) for r in runs)
        overflows = sum(r["kernel_listen"].get("ListenOverflows", 0) for r in runs)
        lines.append(
            f"| {RECONNECT_SCENARIOS.get(scenario, scenario)} "
            f"| {'uniform(0, window)' if mode == 'jitter' else 'none'} "
            f"| {m['new_server_listening_s']:.2f} s | {m['p50_s']:.2f} s | {m['p99_s']:.2f} s "
            f"| {m['last_s']:.2f} s | {m['spread_p1_p99_s']:.2f} s "
            f"| {m['p50_after_listening_s']:.2f} / {m['p99_after_listening_s']:.2f} s "
            f"| {m['peak_per_100ms']:.0f} | {m['handshake_p50_ms']:.0f} / "
            f"{m['handshake_p99_ms']:.0f} ms | {m['failed_before_listening']:,.0f} / "
            f"{m['failed_after_listening']:,.0f} | {refused:,} | {overflows:,} "
            f"| {m['server_cpu_s']:.2f} s |"
        )
    lines.append("")
    for scenario, ratios in spread["ratio_jitter_over_no_jitter"].items():
        wanted = {
            "p99_s": "p99",
            "spread_p1_p99_s": "spread",
            "peak_per_100ms": "most in 100 ms",
            "handshake_p99_ms": "handshake p99",
            "failed_before_listening": "failed attempts before listening",
            "server_cpu_s": "server CPU",
        }
        said = ", ".join(
            f"{label} {ratios[key]:.2f}×" for key, label in wanted.items() if key in ratios
        )
        lines.append(
            f"- {RECONNECT_SCENARIOS.get(scenario, scenario)}, with jitter over without: {said}."
        )
    lines.append("")
    lines += reconnect_notes(spread)
    return lines


def reconnect_notes(spread: dict[str, Any]) -> list[str]:
    """What the reconnect table says, from its figures."""
    medians = spread["medians"]
    window = spread["reconnect_window_s"]
    notes = []
    jittered, plain = medians.get("after-exit/jitter"), medians.get("after-exit/no-jitter")
    if jittered and plain:
        listening = max(jittered["new_server_listening_s"], plain["new_server_listening_s"])
        refused_first = jittered["first_attempt_failed"] >= spread["clients"] / 2
        notes.append(
            "Restarted in place, the clients are back when the new server is: it listened "
            f"{listening:.1f} s after the SIGTERM at the latest (the old one's drain, "
            f"{jittered['old_server_exited_s']:.1f} s, then its own start), against a "
            f"{window:g} s window counted from each client's close"
            + (
                f", so with jitter too {jittered['first_attempt_failed']:,.0f} of the "
                f"{spread['clients']:,} clients' first attempts were refused (without, "
                f"{plain['first_attempt_failed']:,.0f}) and the backoff, more than the "
                "jitter, decided when each came back "
                if refused_first
                else " "
            )
            + f"(p99 {jittered['p99_s']:.1f} s with jitter, {plain['p99_s']:.1f} s without); "
            f"the jitter saved attempts ({jittered['failed_before_listening']:,.0f} refused "
            f"against {plain['failed_before_listening']:,.0f})."
        )
    jittered, plain = medians.get("at-sigterm/jitter"), medians.get("at-sigterm/no-jitter")
    if jittered and plain:
        notes.append(
            "With a server listening while the old one drains (the hand-over), the batches "
            "alone spread the clients without jitter over "
            f"{plain['spread_p1_p99_s']:.1f} s; the jitter spreads them over "
            f"{jittered['spread_p1_p99_s']:.1f} s, the most welcomes in 100 ms going from "
            f"{plain['peak_per_100ms']:.0f} to {jittered['peak_per_100ms']:.0f}, for a later "
            f"p99 ({jittered['p99_s']:.1f} s against {plain['p99_s']:.1f} s)."
        )
    runs = [run for by_run in spread["runs"].values() for run in by_run]
    refused = sum(sum(run["server_refusals"].values()) for run in runs)
    overflows = sum(run["kernel_listen"].get("ListenOverflows", 0) for run in runs)
    failed_after = sum(sum(run["failed_after_listening"].values()) for run in runs)
    notes.append(
        f"Across every run the new server refused {refused:,} connections, the kernel's listen "
        f"queues overflowed {overflows:,} times (machine-wide) and {failed_after:,} attempts "
        f"failed once the new server listened: at {spread['clients']:,} clients the storm "
        "costs the server CPU and the clients a slower handshake"
        + (", nothing more." if not (refused or overflows or failed_after) else ".")
    )
    return [" ".join(notes), ""]


TELNET_KINDS = {
    "ws": "WebSocket (`/ws`)",
    "telnet": "telnet",
    "telnet-mccp2": "telnet + MCCP2 (window 10, memLevel 1: the default)",
    "telnet-mccp2-zlib": "telnet + MCCP2 at zlib's defaults (15, 8)",
}


def telnet_section(
    idle: dict[str, Any] | None,
    delivery: dict[str, Any] | None,
    evennia: dict[str, Any] | None,
) -> list[str]:
    lines = ["## Telnet", ""]
    if idle:
        results, ratios = idle["results"], idle["ratios_to_ws"]
        lines += [
            f"`python bench/telnet_idle.py` — {idle['connections']:,} idle connections each, "
            f"{idle['repeat']} runs, kinds alternating, a fresh mudgate each, {machine(idle)}. "
            "A telnet connection is a guest that signed in (`guest` at the name prompt) and "
            "answers no option, as plain `telnet` does; a WebSocket got its welcome. RSS is "
            "the server's before and after the connections, over their number; CPU is the "
            "server's while they came in, per connection.",
            "",
            "| connection | server RSS per connection | / WebSocket | server CPU to let one in | / WebSocket |",
            "|---|---|---|---|---|",
        ]
        for kind, r in results.items():
            ratio = ratios.get(kind, {"kib_per_connection": 1.0, "cpu_us_per_connection": 1.0})
            lines.append(
                f"| {TELNET_KINDS.get(kind, kind)} | {r['median_kib_per_connection']} KiB "
                f"({r['min_kib_per_connection']}–{r['max_kib_per_connection']}) "
                f"| {ratio['kib_per_connection']:.2f} "
                f"| {r['median_cpu_us_per_connection']:.0f} µs "
                f"| {ratio['cpu_us_per_connection']:.2f} |"
            )
        if "telnet-mccp2" in results and "telnet" in results:
            plain = results["telnet"]["median_kib_per_connection"]
            small = results["telnet-mccp2"]["median_kib_per_connection"] - plain
            zlib = results.get("telnet-mccp2-zlib", {}).get("median_kib_per_connection")
            lines += [
                "",
                f"MCCP2 adds {small:.1f} KiB to a connection with mudgate's small zlib state"
                + (
                    f", {zlib - plain:.1f} KiB with zlib's defaults: the small state saves "
                    f"{zlib - plain - small:.0f} KiB a compressed connection, "
                    f"{(zlib - plain - small) * 1000 / 1024:.0f} MiB a thousand "
                    "(`MUDGATE_TELNET_MAX_COMPRESSED`'s default). zlib's defaults reserve "
                    "256 KiB a stream; RSS counts only the pages a connection touched (at "
                    "memLevel 8 its 64 KiB hash table, which deflateInit clears, and the "
                    "pages its first lines wrote)"
                    if zlib
                    else ""
                )
                + ".",
            ]
        lines.append("")
    if delivery:
        results, ratios = delivery["results"], delivery["ratios_to_ws"]
        lines += [
            f"`python bench/telnet_delivery.py` — {delivery['listeners']} listeners of one kind "
            f"in the lobby and a WebSocket sender saying {delivery['messages']:,} lines at "
            f"{delivery['rate']:g} a second ({delivery['listeners'] * delivery['rate']:,.0f} "
            f"deliveries/s offered), {delivery['repeat']} runs, kinds alternating, a fresh "
            f"mudgate each, {machine(delivery)}. Server CPU is the server process's own user + "
            "system time over the run per listener delivery (the sender's command and its "
            "own echo, the same in every kind, are in it).",
            "",
            "| listeners | server CPU per delivery | / WebSocket | deliveries/s | p50 | p99 "
            "| bytes on the wire per delivery | load generator CPU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind, r in results.items():
            ratio = ratios.get(kind, {}).get("server_cpu_us_per_delivery")
            wire = r["wire_bytes_per_delivery"]
            lines.append(
                f"| {TELNET_KINDS.get(kind, kind)} | {r['server_cpu_us_per_delivery']:.2f} µs "
                f"({r['min_server_cpu_us_per_delivery']:.2f}–"
                f"{r['max_server_cpu_us_per_delivery']:.2f}) "
                f"| {1.0 if ratio is None else ratio:.2f} "
                f"| {r['deliveries_per_second']:,.0f} | {r['p50_ms']:.1f} ms "
                f"| {r['p99_ms']:.1f} ms | "
                + (
                    f"{wire:.1f} B (of {r['text_bytes_per_delivery']:.1f} B of text)"
                    if wire
                    else "—"
                )
                + f" | {r['client_cpu_percent']:.0f} % |"
            )
        missing = sum(r["missing"] for r in results.values())
        lines += [
            "",
            "A telnet delivery renders the event once for every telnet player who gets it "
            "(`Outgoing.view`, as a WebSocket frame is built once) and writes those bytes; "
            "with MCCP2 each connection has its own zlib stream, so each delivery is also "
            "compressed and flushed (`Z_SYNC_FLUSH`) once per connection."
            + (f" Lines missing: {missing}." if missing else " No line went missing."),
            "",
        ]
    if evennia:
        lines += evennia_section(evennia)
    return lines


def evennia_section(evennia: dict[str, Any]) -> list[str]:
    lines = [
        "### Beside Evennia",
        "",
        f"`python bench/telnet_evennia.py` (not in `make bench`: Evennia installs in a "
        f"virtualenv of its own, see the script) — {evennia['evennia']}, its portal (the "
        "sockets) and server (the game) processes both counted, against one mudgate process; "
        f"{evennia['repeat']} runs, contenders alternating, {machine(evennia)}. **login "
        "screen**: connections that got the banner (with MCCP2, compressed from there on); "
        "**signed in**: guests (`guest` at mudgate's prompt, `connect guest` at Evennia's, "
        "which makes an account and a character in its database).",
        "",
        "| stage | connections | server | RSS per connection | portal + server | CPU per connection | connections/s |",
        "|---|---|---|---|---|---|---|",
    ]
    stages = {"screen": "login screen", "guest": "signed in"}
    for stage, by in evennia["results"].items():
        for server, r in by.items():
            split = r["median_kib_by_process"]
            lines.append(
                f"| {stages.get(stage, stage)} | {evennia['connections'][stage]:,} | {server} "
                f"| {r['median_kib_per_connection']} KiB "
                f"({r['min_kib_per_connection']}–{r['max_kib_per_connection']}) "
                f"| {' + '.join(f'{k}' for k in split) if len(split) > 1 else '—'} "
                f"| {r['median_cpu_us_per_connection']:,.0f} µs "
                f"| {r['median_connections_per_second']:,.0f} |"
            )
        for pair, ratio in evennia["ratios"].get(stage, {}).items():
            lines.append(
                f"| {stages.get(stage, stage)} | | **{pair}** "
                f"| **{ratio.get('kib_per_connection', math.nan):.1f}×** | "
                f"| **{ratio.get('cpu_us_per_connection', math.nan):.0f}×** | |"
            )
    lines += [
        "",
        "Evennia compresses with `zlib.compressobj(9)`: zlib's default window and memLevel. "
        "Its CPU per sign-in is making the guest's account and character in its database "
        "(with a fast password hasher set for the bench: Django's PBKDF2 would add ~0.3 s a "
        "guest); its connections/s are bounded by each connection's wait for the banner "
        "(~0.35 s, 50 connecting at once), not by its CPU. Fewer guests are signed in "
        "because Evennia takes ~10 a second.",
        "",
    ]
    return lines


def main() -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python bench/report.py` from `bench/results/*.json`). Every",
        "comparison runs its contenders alternately in one invocation; figures are medians.",
        "",
    ]
    idle = load("idle_memory")
    if idle:
        lines += [
            "## Idle connections: server RSS per connection",
            "",
            f"`python bench/idle_memory.py` — {idle['repeat']} runs, {machine(idle)}. bare ASGI "
            "is the floor: uvicorn holding the socket and nothing else. The FastAPI docs pattern "
            "and python-socketio have no SSE endpoint.",
            "",
            "| connections | transport | mudgate | bare ASGI (floor) | FastAPI docs | python-socketio | target |",
            "|---|---|---|---|---|---|---|",
        ]
        targets = {"ws": "≤ 16 KiB", "sse": "≤ 10 KiB"}
        for n, by_transport in idle["results"].items():
            for transport, by in by_transport.items():
                ours = by["mudgate"]
                cells = [
                    f"{by[peer]['median_kib']} KiB ({ours['median_kib'] / by[peer]['median_kib']:.2f}×)"
                    if peer in by and by[peer]["median_kib"] > 0
                    else "—"
                    for peer in ("bare-asgi", "fastapi-docs", "socketio")
                ]
                lines.append(
                    f"| {n} | {transport} | {ours['median_kib']} KiB "
                    f"({ours['min_kib']}–{ours['max_kib']}) | {' | '.join(cells)} "
                    f"| {targets[transport]} |"
                )
        lines += ["", "In brackets beside a peer: mudgate's figure over the peer's.", ""]
    broadcast = load("broadcast")
    if broadcast:
        lines += broadcast_section(broadcast)
    cluster = load("cluster_broadcast")
    if cluster:
        lines += cluster_section(cluster)
    churn = load("churn")
    if churn:
        lines += [
            "## Churn: connect → join → say → disconnect",
            "",
            f"`python bench/churn.py` — {churn['cycles']:,} cycles from {churn['processes']} "
            f"client processes ({churn['concurrency']} at a time each), half ended by a TCP reset, "
            f"{churn['repeat']} run(s), {machine(churn)}. RSS after the warm-up (the first 10 % "
            "of the cycles) and at the end (after 3 s and, for mudgate, a forced cleanup).",
            "",
            "| server | cycles/s | RSS after warm-up | RSS at end | growth | not empty at the end | failed cycles | load generator CPU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for server, r in churn["results"].items():
            left = {k: v for k, v in r["structures_at_end"].items() if v}
            left_text = ", ".join(f"{k} {v:,}" for k, v in left.items()) or "nothing"
            failed = sum(r["errors"].values())
            lines.append(
                f"| {server} | {r['cycles_per_second']['median']:,.0f} "
                f"| {r['rss_after_warmup_mib']['median']:.1f} MiB "
                f"| {r['rss_at_end_mib']['median']:.1f} MiB "
                f"| {r['rss_growth_mib']['median']:+.1f} MiB"
                + (
                    f" ({r['rss_growth_mib']['min']:+.1f} to {r['rss_growth_mib']['max']:+.1f})"
                    if churn["repeat"] > 1
                    else ""
                )
                + f" | {left_text} | {failed:,} | {r['client_cpu_percent']['median']:.0f} % |"
            )
        ours = churn["results"]["mudgate"]
        growth = ours["rss_growth_mib"]["median"]
        emptied = not any(ours["structures_at_end"].values())
        lines += [
            "",
            f"Target: RSS grows ≤ 1 MiB after the warm-up and every structure is back to 0: "
            f"growth {'**met**' if growth <= 1 else f'**missed** ({growth:+.1f} MiB)'}, "
            f"structures {'**met**' if emptied else '**missed**'}. The RSS samples along the "
            "run (in the JSON) show where it levels off.",
            "",
            "Each cycle is a new player id, and mudgate runs here with `MUDGATE_LAST_SEEN_TTL` "
            "and `MUDGATE_CONNECTION_ATTEMPT_TTL` at 2 s (an hour by default) so that what it "
            "remembers of players who left can be seen to empty within the run; every structure "
            "is in `bench/results/churn.json`, with RSS samples along the run. With the default "
            "hour those two fill towards their caps (`MUDGATE_MAX_PLAYERS`, "
            "`MUDGATE_MAX_RATE_LIMIT_KEYS`) and stop there: that is the budget in "
            "`/monitoring/memory`, not growth.",
            "",
            "The FastAPI docs pattern's broadcast raises in the sender's handler as soon as one "
            "recipient has reset, so that handler never removes itself and the cycles after it "
            "never hear their own say. python-socketio's own tables are empty at the end, yet "
            "its RSS grew by the figure above; where that memory went was not chased here.",
            "",
        ]
    stalled = load("stalled")
    if stalled:
        lines += [
            "## A stalled client",
            "",
            f"`python bench/stalled.py` — a room of {stalled['players']}, one player stops "
            f"reading while another floods the room for {stalled['seconds']:.0f} s, "
            f"{stalled['repeat']} runs, {machine(stalled)}. Each run with one stalled is paired "
            "with one with nobody stalled, back to back (which goes first alternates); kept is "
            "the median of the pairs' ratios.",
            "",
            "| server | healthy players' rate, nobody stalled | with one stalled | kept | server CPU per delivery, nobody / one stalled | server RSS growth |",
            "|---|---|---|---|---|---|",
        ]
        for server, r in stalled["results"].items():
            cpu = (
                f"{r['unstalled']['server_cpu_us_per_delivery']:.1f} / "
                f"{r['stalled']['server_cpu_us_per_delivery']:.1f} µs"
                if "server_cpu_us_per_delivery" in r["stalled"]
                else "—"
            )
            lines.append(
                f"| {server} | {r['unstalled']['healthy_deliveries_per_second']:,.0f} msg/s "
                f"| {r['stalled']['healthy_deliveries_per_second']:,.0f} msg/s "
                f"| {r['kept_fraction']:.1%} | {cpu} | {r['stalled']['rss_growth_mib']:+.1f} MiB |"
            )
        peers_kept = {
            server: r["kept_fraction"]
            for server, r in stalled["results"].items()
            if server != "mudgate"
        }
        below = [server for server, kept in peers_kept.items() if kept < 0.99]
        lines += [
            "",
            "Target: healthy players keep ≥ 99 % of their rate and the server holds no more "
            "than the outbox cap for the stalled one. mudgate holds at most its outbox, its "
            "write buffer and its capped kernel send buffer for it, and closes it with 4008 once "
            "the outbox fills. "
            + f"mudgate kept {stalled['results']['mudgate']['kept_fraction']:.1%}: "
            + met(stalled["results"]["mudgate"]["kept_fraction"] >= 0.99)
            + ". On this shared machine two back-to-back runs differ by up to ±15 % in rate "
            "for reasons of its own; the server CPU per delivery with and without the stalled "
            "client says whether the stall cost the server anything. "
            + (f"Below 99 % among the peers: {', '.join(below)}. " if below else "")
            + "uvicorn lets the kernel hold megabytes for a stalled client before its send "
            "blocks (the FastAPI docs pattern waits only then, and the whole room with it), "
            "and Node's `ws` and Socket.IO never wait but buffer without a bound (their RSS "
            "growth above).",
            "",
        ]
    hostile = load("hostile")
    if hostile:
        lines += hostile_section(hostile)
    overhead = load("monitoring_overhead")
    if overhead:
        d = overhead["deliveries_per_second"]
        lines += [
            "## What watching costs",
            "",
            f"`python bench/monitoring_overhead.py` — broadcast in a room of {overhead['players']}, "
            f"{overhead['repeat']} runs alternating, {machine(overhead)}. On: health watch ticks every "
            "0.5 s, janitor cleans every 2 s, /metrics scraped every 0.5 s. Off: all an hour apart.",
            "",
            f"- off: {d['off']['median']:,.0f} deliveries/s ({d['off']['min']:,.0f}–{d['off']['max']:,.0f})",
            f"- on: {d['on']['median']:,.0f} deliveries/s ({d['on']['min']:,.0f}–{d['on']['max']:,.0f})",
        ]
        c = overhead.get("server_cpu_us_per_delivery")
        if c:
            lines += [
                f"- server CPU per delivery: off {c['off']['median']:.2f} µs, on "
                f"{c['on']['median']:.2f} µs: **{overhead['cpu_cost_fraction']:+.1%}** "
                f"(target ≤ 1 %: {met(overhead['cpu_cost_fraction'] <= 0.01)}; runs of one mode "
                f"spread {(c['off']['max'] - c['off']['min']) / c['off']['median']:.0%}, so "
                "only a cost well above that spread would show)",
            ]
        lines += [
            f"- throughput cost: {overhead['cost_fraction']:.1%} (runs of one mode spread "
            f"{(d['off']['max'] - d['off']['min']) / d['off']['median']:.1%}: the rate moves "
            "with the rest of the machine, the CPU per delivery much less)",
            "",
        ]
    cleanup = load("cleanup_cost")
    if cleanup:
        lines += [
            "## Monitoring and cleanup costs",
            "",
            f"`python bench/cleanup_cost.py` — {machine(cleanup)}.",
            "",
            f"- one memory read: {cleanup['monitor_read_microseconds']['median']:.1f} µs",
        ]
        for name, r in cleanup["cleanup_seconds"].items():
            lines.append(f"- cleanup, {name}, 1,000 expired: {r['median'] * 1000:.2f} ms")
        lines += [
            f"- 1M vs 10k entries, same expired: time ratio {cleanup['ratio_1m_vs_10k']} "
            "(target ≤ 1.5)",
            "",
        ]
    traced = load("tracemalloc_overhead")
    if traced:
        d = traced["deliveries_per_second"]
        lines += [
            "## tracemalloc while on",
            "",
            f"`python bench/tracemalloc_overhead.py` — {machine(traced)}: hub broadcast "
            f"{d['off']['median']:,.0f} deliveries/s off, {d['on']['median']:,.0f} on "
            f"({traced['slowdown']}× slower).",
            "",
        ]
    fanout = load("fanout_baseline") or load("fanout")
    if fanout:
        cost = fanout["us_per_delivery"]
        lines += [
            "## The fan-out, without the sockets",
            "",
            f"`python bench/fanout.py` — {machine(fanout)}: a broadcast to "
            f"{fanout['connections']:,} connections through mudgate's WebSocket transport into a "
            f"sink, {cost['mudgate']:.3f} µs of CPU per delivery (the floor of "
            f"{fanout['repeat']} rounds of {fanout['broadcasts']:,} broadcasts).",
        ]
        if "mudgate-baseline" in cost:
            lines.append(
                f"Before vs after (`--baseline`): {cost['mudgate-baseline']:.3f} µs before, "
                f"{cost['mudgate'] / cost['mudgate-baseline']:.2f}× after."
            )
        lines.append("")
    split = load("game_split")
    if split:
        lines += game_split_section(split)
    restart = load("game_restart")
    if restart:
        lines += game_restart_section(restart)
    spread = load("reconnect_spread")
    if spread:
        lines += reconnect_section(spread)
    telnet = load("telnet_idle"), load("telnet_delivery"), load("telnet_evennia")
    if any(telnet):
        lines += telnet_section(*telnet)
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
