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
            f"`python bench/idle_memory.py` — {idle['connections']} connections, {idle['repeat']} "
            f"runs, {machine(idle)}.",
            "",
            "| transport | mudgate | bare ASGI on uvicorn (the floor) | ratio | target |",
            "|---|---|---|---|---|",
        ]
        targets = {"ws": "≤ 20 KiB", "sse": "≤ 12 KiB"}
        for transport, by in idle["results"].items():
            ours, floor = by["mudgate"], by["bare-asgi"]
            lines.append(
                f"| {transport} | {ours['median_kib']} KiB ({ours['min_kib']}–{ours['max_kib']}) "
                f"| {floor['median_kib']} KiB | {ours['median_kib'] / floor['median_kib']:.2f} "
                f"| {targets[transport]} |"
            )
        lines.append("")
    broadcast = load("broadcast")
    if broadcast:
        lines += [
            "## Broadcast: one player talks in a room of N",
            "",
            f"`python bench/broadcast.py` — {broadcast['messages']} messages, "
            f"{broadcast['repeat']} runs, {machine(broadcast)}. Healthy clients only; the load "
            "generator's CPU is shown (at ~100 % it, not the server, limits the figure).",
            "",
            "| players | server | deliveries/s | p50 | p99 | load generator CPU |",
            "|---|---|---|---|---|---|",
        ]
        for players, by in broadcast["results"].items():
            for server, r in by.items():
                lines.append(
                    f"| {players} | {server} | {r['deliveries_per_second']:,.0f} "
                    f"({r['min_deliveries_per_second']:,}–{r['max_deliveries_per_second']:,}) "
                    f"| {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['client_cpu_percent']:.0f} % |"
                )
            ratio = (
                by["mudgate"]["deliveries_per_second"] / by["fastapi-docs"]["deliveries_per_second"]
            )
            lines.append(f"| {players} | **mudgate / FastAPI docs** | **{ratio:.2f}** | | | |")
        lines += [
            "",
            "The target is ≥ 2× the FastAPI docs pattern: **missed**. That pattern awaits each "
            "client's send in one loop, which costs nothing while every client reads and stalls "
            "the whole room when one does not; mudgate queues to each connection's outbox and its "
            "writer task writes, one task step per recipient. The stalled-client benchmark below "
            "shows what that buys.",
            "",
        ]
    cluster = load("cluster_broadcast")
    if cluster:
        lines += [
            "## Broadcast across nodes (Redis backplane)",
            "",
            f"`python bench/cluster_broadcast.py` — a room of {cluster['players']}, "
            f"{cluster['messages']} messages, {cluster['repeat']} runs, {machine(cluster)}. "
            "Both nodes, redis-server and the load generator share the machine.",
            "",
            "| setup | deliveries/s | p50 | p99 | load generator CPU | vs in-process |",
            "|---|---|---|---|---|---|",
        ]
        ratios = cluster["ratios_to_in_process"]
        for setup, r in cluster["results"].items():
            lines.append(
                f"| {setup} | {r['deliveries_per_second']:,.0f} "
                f"({r['min_deliveries_per_second']:,}–{r['max_deliveries_per_second']:,}) "
                f"| {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['client_cpu_percent']:.0f} % "
                f"| {ratios.get(setup, 1.0):.2f} |"
            )
        lines += [
            "",
            "`redis-1-node` is one node whose every message also goes through Redis (and comes "
            "back, to be skipped): what the backplane costs. With `redis-2-nodes` half the room "
            "is on each node and each node fans out to its own half, on its own core.",
            "",
        ]
    stalled = load("stalled")
    if stalled:
        lines += [
            "## A stalled client",
            "",
            f"`python bench/stalled.py` — a room of {stalled['players']}, one player stops "
            f"reading while another floods the room for {stalled['seconds']:.0f} s, "
            f"{stalled['repeat']} runs, {machine(stalled)}.",
            "",
            "| server | healthy players' rate, nobody stalled | with one stalled | kept | server RSS growth |",
            "|---|---|---|---|---|",
        ]
        for server, r in stalled["results"].items():
            lines.append(
                f"| {server} | {r['unstalled']['healthy_deliveries_per_second']:,.0f} msg/s "
                f"| {r['stalled']['healthy_deliveries_per_second']:,.0f} msg/s "
                f"| {r['kept_fraction']:.1%} | {r['stalled']['rss_growth_mib']:+.1f} MiB |"
            )
        lines += [
            "",
            "Target: healthy players keep ≥ 99 % of their rate and the server holds no more "
            "than the outbox cap for the stalled one. mudgate closes it with 4008 once its "
            "outbox fills; the FastAPI docs pattern waits on it, and the whole room with it.",
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
            f"- cost: {overhead['cost_fraction']:.1%} (target ≤ 1 %; runs of one mode spread "
            f"{(d['off']['max'] - d['off']['min']) / d['off']['median']:.1%})",
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
