"""The deploy files: Prometheus rules and the Grafana dashboard's expressions pass promtool,
and every metric they use is one /metrics really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import make_settings
from ..redis_server import RedisServer
from .clients import Player
from .server import RunningServer, running_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "mudgate-rules.yml"
GRAFANA = DEPLOY / "grafana" / "mudgate-dashboard.json"
# PromQL words that look like metric names but are functions, keywords or labels.
NOT_METRICS = {
    "rate", "increase", "deriv", "histogram_quantile", "sum", "by", "and", "or", "unless",
    "up", "job", "instance", "le", "mudgate",
}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make test` installs Debian's prometheus as root"
    return found


def metric_names(expression: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', " ", expression)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings))
    return {word for word in words if "_" in word and word not in NOT_METRICS}


async def exported(server: RunningServer) -> set[str]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        text = (await http.get("/metrics")).text
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.add(family.name)
    return names


def test_the_prometheus_rules_pass_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_rules_use_the_design_thresholds() -> None:
    rules = {
        rule["alert"]: rule for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    }
    assert rules["MudgateMemoryHigh"]["expr"] == "mudgate_memory_percent >= 70"
    assert rules["MudgateMemoryWarning"]["expr"] == "mudgate_memory_percent >= 80"
    assert rules["MudgateMemoryCritical"]["expr"] == "mudgate_memory_percent >= 90"


def panel_expressions() -> list[str]:
    return [
        target["expr"]
        for panel in json.loads(GRAFANA.read_text())["panels"]
        for target in panel["targets"]
    ]


def test_the_dashboard_expressions_pass_promtool(tmp_path: Path) -> None:
    # promtool checks PromQL only in rules: each expression as a recording rule.
    rules = [
        {"record": f"mudgate_dashboard:expression_{index}", "expr": expression}
        for index, expression in enumerate(panel_expressions())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_metric_in_the_rules_and_the_dashboard_is_exported(
    redis_server: RedisServer,
) -> None:
    # With Redis, so the backplane's metrics are there; after a command and an error, so
    # the per-command ones have a sample.
    with running_server(make_settings(backplane=redis_server.url)) as server:
        async with await Player.connect(server.ws("alice")) as alice:
            await alice.next("welcome")
            await alice.send(op="ping", id=1)
            await alice.next("pong")
            await alice.send(op="say", id=2)
            await alice.next("error")
        live = await exported(server)
    rule_expressions = [
        rule["expr"] for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    ]
    used = set().union(*(metric_names(e) for e in rule_expressions + panel_expressions()))
    assert used, "no metric names found"
    assert {
        "mudgate_cleanup_duration_seconds_bucket",
        "mudgate_command_duration_seconds_bucket",
        "mudgate_command_errors_total",
        "mudgate_event_loop_lag_seconds_bucket",
        "mudgate_backplane_published_total",
        "mudgate_shedding",
        "mudgate_sockets",
    } <= used
    assert used - live == set(), f"used but not exported by /metrics: {sorted(used - live)}"
