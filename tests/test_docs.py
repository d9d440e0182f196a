"""The docs name every setting, every HTTP route and every close code the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudgate.protocol import CloseCode
from mudgate.settings import ENV_PREFIX, Settings
from mudgate.web.app import create_app

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
    routes = set(create_app(make_settings()).openapi()["paths"]) | {"/ws", "/events"}
    assert [route for route in sorted(routes) if route not in text] == []


def test_every_close_code_is_documented() -> None:
    protocol = (ROOT / "docs/protocol.md").read_text()
    for code in CloseCode:
        assert f"| {int(code)} | {code.name} |" in protocol, code


def test_the_openapi_schema_says_what_each_endpoint_can_answer() -> None:
    paths = create_app(make_settings()).openapi()["paths"]
    commands = paths["/commands"]["post"]
    assert commands["requestBody"]["content"]["application/json"]["schema"]["required"] == ["op"]
    assert {"400", "401", "409", "413", "429"} <= set(commands["responses"])
    assert "429" in paths["/monitoring/memory/objects"]["get"]["responses"]
    assert "429" in paths["/monitoring/memory/cleanup"]["post"]["responses"]
