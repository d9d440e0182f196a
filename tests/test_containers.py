"""The Dockerfile and compose.yaml, checked against the code (Docker does not run here): the
port, the health path, every MUDGATE_* they set, the files they mount, the caps against the
memory limit, and the images they pull."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mudgate.memory.budget import memory_budget
from mudgate.settings import ENV_PREFIX, Settings

from .conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SETTINGS = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
MIB = 1024 * 1024
# The process before any player, the budget's "process" line: `mudgate serve` on the Redis
# backplane read 68 MiB at its first memory reading (/monitoring/memory, Python 3.11), rounded
# up for the image's Python 3.12 and for a cgroup's working set, which counts more than RSS.
PROCESS_BYTES = 80 * MIB


def instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.M)]


def nodes() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in COMPOSE["services"].items() if name.startswith("mudgate")}


def node_settings(service: dict[str, Any]) -> Settings:
    """What a node runs with: its environment, the secrets compose asks for (``${...}``) given
    the tests' values."""
    environment = {
        name.removeprefix(ENV_PREFIX).lower(): value
        for name, value in service["environment"].items()
        if not str(value).startswith("${")
    }
    return make_settings(**environment)


def byte_size(value: str | int) -> int:
    """Compose's byte values: a number of bytes, or one with a unit (``512m``, ``1g``)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", str(value).lower())
    assert match is not None, value
    return int(match.group(1)) * 1024 ** "bkmg".index(match.group(2) or "b")


def routes() -> set[str]:
    from mudgate.gateway import Gateway, create_app  # noqa: PLC0415 (builds a whole app)

    return set(create_app(Gateway(make_settings())).openapi()["paths"])


def test_the_image_is_slim_python_and_runs_as_a_user_of_its_own() -> None:
    assert all(re.fullmatch(r"python:3\.1[1-9]-slim( AS \w+)?", f) for f in instructions("FROM"))
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    assert instructions("CMD") == ['["mudgate", "serve"]']
    assert instructions("STOPSIGNAL") == ["SIGTERM"]


def test_the_image_listens_where_its_healthcheck_and_expose_say() -> None:
    environment = dict(re.findall(r"(MUDGATE_\w+)=(\S+)", " ".join(instructions("ENV"))))
    assert set(environment) <= SETTINGS
    port = environment["MUDGATE_PORT"]
    assert environment["MUDGATE_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert instructions("EXPOSE") == [port]
    (healthcheck,) = instructions("HEALTHCHECK")
    probe = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", healthcheck)
    assert probe is not None
    assert probe.group(1) == port
    assert probe.group(2) == "/health/live"
    assert "/health/live" in routes()


def test_compose_sets_only_real_settings_and_reaches_each_node_on_its_port() -> None:
    services = COMPOSE["services"]
    nodes = {name: service for name, service in services.items() if name.startswith("mudgate")}
    assert len(nodes) == 3
    (container_port,) = instructions("EXPOSE")
    for name, service in nodes.items():
        assert set(service["environment"]) <= SETTINGS
        assert all(mapping.endswith(f":{container_port}") for mapping in service["ports"])
        if name == "mudgate-castle":  # the example game, a cluster of its own
            assert service["build"] == {"context": ".", "dockerfile": "examples/castle/Dockerfile"}
            assert service["environment"]["MUDGATE_BACKPLANE"] == "redis://redis:6379/1"
            assert service["environment"]["MUDGATE_GAME"] == "examples.castle.game:game"
        else:
            assert service["build"] == "."
            assert service["environment"]["MUDGATE_BACKPLANE"] == "redis://redis:6379/0"
    assert "redis" in services
    # Prometheus scrapes both nodes, by service name, at the container's port.
    prometheus = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert "/metrics" in routes()
    assert sorted(job["static_configs"][0]["targets"]) == [
        f"{name}:{container_port}" for name in sorted(nodes)
    ]


def test_the_games_image_runs_the_castle_behind_the_gateway() -> None:
    dockerfile = (ROOT / "examples/castle/Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert "USER mudgate" in lines
    assert "COPY --chown=mudgate examples ./examples" in lines
    assert 'CMD ["mudgate", "serve"]' in lines
    assert "MUDGATE_GAME=examples.castle.game:game" in dockerfile
    from examples.castle.game import game  # noqa: PLC0415

    from mudgate import Game  # noqa: PLC0415

    assert isinstance(game, Game)
    assert (ROOT / "examples/castle/game.py").is_file()


def test_every_file_compose_mounts_exists_where_the_services_look_for_it() -> None:
    mounts: dict[str, str] = {}
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", ()):
            source, target, *_ = volume.split(":")
            assert (ROOT / source).is_file(), source
            mounts[target] = source
    assert mounts["/etc/prometheus/mudgate-rules.yml"] == "./deploy/prometheus/mudgate-rules.yml"
    prometheus = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/mudgate-rules.yml"]
    assert "/etc/prometheus/prometheus.yml" in mounts
    provisioning = yaml.safe_load((ROOT / "deploy/compose/grafana/provisioning.yml").read_text())
    dashboards = provisioning["providers"][0]["options"]["path"]
    assert (
        mounts[f"{dashboards}/mudgate-dashboard.json"] == "./deploy/grafana/mudgate-dashboard.json"
    )


def test_each_node_says_its_limit_and_the_worst_case_of_its_caps_fits_under_it() -> None:
    for name, service in nodes().items():
        limit_bytes = byte_size(service["mem_limit"])
        settings = node_settings(service)
        assert settings.memory_limit_mb is not None, name
        assert settings.memory_limit_mb * MIB == limit_bytes, name
        budget = memory_budget(settings, limit_bytes, PROCESS_BYTES)
        # With a margin: the worst case stays under the warning level, so the caps alone never
        # make a node shed, and the rest is for what the budget does not list.
        margin_bytes = limit_bytes * settings.memory_warning_percent / 100
        lines = {line.structure: round(line.worst_case_bytes / MIB) for line in budget.lines}
        assert budget.total_bytes <= margin_bytes, (
            f"{name}: the caps allow {budget.total_bytes / MIB:.0f} MiB, over "
            f"{margin_bytes / MIB:.0f} MiB ({settings.memory_warning_percent:.0f} % of "
            f"{limit_bytes / MIB:.0f} MiB); MiB per structure: {lines}"
        )


def test_every_image_compose_pulls_is_pinned_to_a_release() -> None:
    images = {name: s["image"] for name, s in COMPOSE["services"].items() if "image" in s}
    assert set(images) == {"redis", "prometheus", "grafana"}
    for name, image in images.items():
        _, _, tag = image.rpartition(":")
        # A major version alone (`7-alpine`) moves as much as `latest` does.
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[a-z0-9.]+)?", tag), f"{name}: {image}"
