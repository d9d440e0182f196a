"""The report of ``mudgate soak``: soak.json, soak.md and, with matplotlib, soak.png."""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict
from pathlib import Path

from .soak import SoakReport, duration_text

__all__ = ["write_report"]


def write_report(report: SoakReport, out: Path) -> list[Path]:
    """soak.json, soak.md and soak.png in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "soak.json", out / "soak.md"]
    written[0].write_text(json.dumps(asdict(report), indent=2) + "\n")
    chart = _chart(report, out / "soak.png")
    if chart is not None:
        written.append(chart)
    written[1].write_text(_markdown(report, chart))
    return written


def _chart(report: SoakReport, path: Path) -> Path | None:
    try:
        import matplotlib  # noqa: PLC0415 - an optional extra, and slow to import

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    times = [s.at / 60 for s in report.samples]
    figure, rss_axis = plt.subplots(figsize=(10, 4.5), dpi=100)
    rss_axis.plot(times, [s.rss_mb for s in report.samples], color="#1d2733", label="server RSS")
    rss_axis.set_xlabel("minutes")
    rss_axis.set_ylabel("server RSS (MiB)")
    connections_axis = rss_axis.twinx()
    connections_axis.plot(
        times, [s.server_connections for s in report.samples], color="#0969da", alpha=0.6,
        label="server connections",
    )  # fmt: skip
    connections_axis.set_ylabel("connections")
    rss_axis.set_title(
        f"mudgate soak: {report.verdict} "
        f"({report.slope_mb_per_hour:+.1f} MiB/h after warm-up, r² {report.r_squared})"
    )
    lines = [*rss_axis.get_lines(), *connections_axis.get_lines()]
    rss_axis.legend(lines, [str(line.get_label()) for line in lines], loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _markdown(report: SoakReport, chart: Path | None) -> str:
    config = report.config
    lines = [
        f"# Soak of {config['url']}: **{report.verdict}**",
        "",
        f"{config['clients']} players for {duration_text(config['duration_seconds'])}, "
        f"{config['churn_rate']} sessions ending per second ({report.sessions:,} sessions, "
        f"{report.vanished:,} vanished without a close); {report.sent:,} frames sent, "
        f"{report.received:,} received. Written "
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}.",
        "",
        f"RSS after the warm-up: {report.growth_mb:+.2f} MiB, trend "
        f"{report.slope_mb_per_hour:+.2f} MiB/h (r² {report.r_squared}); growing means over "
        f"{config['max_slope_mb_per_hour']} MiB/h on a straight line and more than 2 MiB.",
        "",
    ]
    lines += [f"- {reason}" for reason in report.reasons] + ([""] if report.reasons else [])
    lines += [f"- Note: {hint}" for hint in report.hints] + ([""] if report.hints else [])
    if chart is not None:
        lines += [f"![RSS and connections]({chart.name})", ""]
    else:
        lines += ["(No chart: `pip install 'mudgate[soak]'` for matplotlib.)", ""]
    lines += ["| structure | before | after |", "|---|---|---|"]
    for name in sorted(set(report.structures_before) | set(report.structures_after)):
        lines.append(
            f"| {name} | {report.structures_before.get(name, '?')} "
            f"| {report.structures_after.get(name, '?')} |"
        )
    lines += ["", "Errors seen: " + (", ".join(
        f"{name}: {count}" for name, count in sorted(report.errors.items())
    ) or "none"), ""]  # fmt: skip
    return "\n".join(lines)
