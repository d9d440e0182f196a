"""Write BENCHMARKS.md from the JSON the benchmarks left in bench/results/.

python bench/report.py
"""

from __future__ import annotations

import json
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
            + (
                f"Below 99 % among the peers: {', '.join(below)}. "
                if below
                else ""
            )
            + "uvicorn lets the kernel hold megabytes for a stalled client before its send "
            "blocks (the FastAPI docs pattern waits only then, and the whole room with it), "
            "and Node's `ws` and Socket.IO never wait but buffer without a bound (their RSS "
            "growth above).",
            "",
        ]
    hostile = load("hostile")
    if hostile:
        lines += [
            "## Hostile floods",
            "",
            f"`python bench/hostile.py` — each flood runs {hostile['seconds']:.0f} s from "
            f"loopback against a fresh server, {hostile['repeat']} run(s), contenders alternating, "
            f"{machine(hostile)}. Four healthy players ping in turn every 25 ms throughout; "
            "RSS is the server's before the flood, at its peak, and 2 s after it ended; CPU is "
            "the server's own during the flood.",
            "",
            "| flood | server | healthy ping p50 | p99 | unanswered, dropped | RSS before → peak → after | server CPU |",
            "|---|---|---|---|---|---|---|",
        ]
        for attack, by_server in hostile["results"].items():
            for server, r in by_server.items():
                lines.append(
                    f"| {attack} | {server} | {r['ping_p50_ms']:.1f} ms | {r['ping_p99_ms']:.1f} ms "
                    f"| {r['unanswered']:.0f}, {r['disconnected']:.0f} "
                    f"| {r['rss_before_mib']:.0f} → {r['rss_peak_mib']:.0f} → "
                    f"{r['rss_after_mib']:.0f} MiB | {r['server_cpu_seconds']:.2f} s |"
                )
        worst = max(r["mudgate"]["ping_p99_ms"] for r in hostile["results"].values())
        grown = max(
            r["mudgate"]["rss_after_mib"] / r["mudgate"]["rss_before_mib"] - 1
            for r in hostile["results"].values()
        )
        lines += [
            "",
            f"Target: the healthy player's p99 ≤ 50 ms during every flood, and RSS back within "
            f"10 % of its start after it. mudgate: worst p99 {worst:.1f} ms "
            f"(**{'met' if worst <= 50 else 'missed'}**), RSS at most {grown:+.0%} of its start "
            f"2 s after a flood (**{'met' if grown <= 0.10 else 'missed'}**). Every flood is "
            "bounded here so that the peer survives it; `tests/hostile/` runs each against "
            "`mudgate serve` with the assertions.",
            "",
        ]
    overhead = load("monitoring_overhead")
    if overhead:
        d = overhead["deliveries_per_second"]
        lines += [
            "## What watching costs",
            "",
            f"`python bench/monitoring_overhead.py` — broadcast in a room of {overhead['players']}, "
            f"{overhead['repeat']} runs alternating, {machine(overhead)}. On: janitor checks every "
            "0.5 s, cleans every 2 s, /metrics scraped every 0.5 s. Off: all an hour apart.",
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
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
