"""The docs name every setting, every HTTP route and every close code the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudgate.gateway import Gateway, create_app
from mudgate.protocol import CloseCode
from mudgate.settings import ENV_PREFIX, Settings

from .conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/operations.md", "docs/protocol.md", "docs/embedding.md"]


@pytest.fixture(scope="module")
def text() -> str:
    return "\n".join((ROOT / name).read_text() for name in DOCS)


def test_every_setting_is_documented(text: str) -> None:
    missing = [name for name in Settings.model_fields if f"{ENV_PREFIX}{name.upper()}" not in text]
    assert missing == []


def test_operations_explains_every_setting_but_the_serving_basics() -> None:
    operations = (ROOT / "docs/operations.md").read_text()
    basics = {"host", "port", "secret_key", "admin_token", "allow_guests", "ws_per_message_deflate"}
    missing = [
        name
        for name in Settings.model_fields
        if name not in basics and f"{ENV_PREFIX}{name.upper()}" not in operations
    ]
    assert missing == []


def test_every_route_is_documented(text: str) -> None:
    routes = set(create_app(Gateway(make_settings())).openapi()["paths"]) | {"/ws", "/events"}
    assert [route for route in sorted(routes) if route not in text] == []


def test_every_close_code_is_documented() -> None:
    protocol = (ROOT / "docs/protocol.md").read_text()
    for code in CloseCode:
        assert f"| {int(code)} | {code.name} |" in protocol, code


def test_the_openapi_schema_says_what_each_endpoint_can_answer() -> None:
    paths = create_app(Gateway(make_settings())).openapi()["paths"]
    commands = paths["/commands"]["post"]
    assert commands["requestBody"]["content"]["application/json"]["schema"]["required"] == ["op"]
    assert {"400", "401", "409", "413", "429"} <= set(commands["responses"])
    assert "429" in paths["/monitoring/memory/objects"]["get"]["responses"]
    assert "429" in paths["/monitoring/memory/cleanup"]["post"]["responses"]


def _classes() -> dict[str, type]:
    import importlib  # noqa: PLC0415
    import inspect  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    import mudgate  # noqa: PLC0415

    found: dict[str, type] = {}
    for module in pkgutil.walk_packages(mudgate.__path__, "mudgate."):
        if module.name.startswith("mudgate.tools") or module.name.endswith("__main__"):
            continue  # the soak client, and `python -m mudgate` (it would run)
        for name, value in inspect.getmembers(importlib.import_module(module.name)):
            if inspect.isclass(value) and value.__module__.startswith("mudgate"):
                found.setdefault(name, value)
    return found


def test_the_architecture_names_code_that_exists() -> None:
    # Every `Class.attribute` docs/architecture.md walks through is one the code has, so the
    # hops cannot drift from what runs.
    import re  # noqa: PLC0415

    text = (ROOT / "docs/architecture.md").read_text()
    classes = _classes()
    named = set(re.findall(r"`([A-Z][A-Za-z]+)\.([a-z_]+)", text))
    assert len(named) > 15
    missing = [
        f"{cls}.{attr}"
        for cls, attr in sorted(named)
        if cls not in classes or not hasattr(classes[cls], attr)
    ]
    assert missing == []


def _hops(section: str) -> list[str]:
    return [line for line in section.splitlines() if line[:1].isdigit() and ". " in line[:4]]


def test_the_architecture_walks_both_paths_in_fewer_hops_than_before() -> None:
    text = (ROOT / "docs/architecture.md").read_text()
    say = text.split("## The say path")[1].split("## ")[0]
    disconnect = text.split("## The disconnect path")[1]
    assert 0 < len(_hops(say)) < 20
    assert 0 < len(_hops(disconnect)) < 15


def test_the_architecture_paths_only_go_down_except_where_they_say_so() -> None:
    # Each hop names its part, "[hub]"; a hop into a higher layer must say how ("(up: ...").
    import re  # noqa: PLC0415

    from .test_layers import RANK  # noqa: PLC0415

    text = (ROOT / "docs/architecture.md").read_text()
    for title in ("## The say path", "## The disconnect path"):
        hops = _hops(text.split(title)[1].split("\n## ")[0])
        parts = [re.match(r"\d+\. \[(\w+)\]", hop) for hop in hops]
        assert all(parts), f"{title}: every hop starts with its [part]"
        ranks = [RANK[{"janitor": "cleanup"}.get(m[1], m[1])] for m in parts if m]
        upward = [
            hops[index]
            for index in range(1, len(hops))
            if ranks[index] < ranks[index - 1] and "(up:" not in hops[index]
        ]
        assert upward == [], title
