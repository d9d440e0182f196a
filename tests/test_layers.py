"""The parts of mudgate and their layers (docs/architecture.md, DESIGN.md section 1): every
import between parts points down, no two parts import each other, and what sits below the web
layer (and the client) never loads FastAPI or Starlette."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mudgate"

# Top to bottom. A part imports only from the layers below its own (or, within a layer, from
# a sibling, as long as no two parts import each other). ``mudgate/__init__.py`` is the public
# facade: it imports nothing until a name is asked for (PEP 562), so it is no part.
LAYERS: list[tuple[str, set[str]]] = [
    ("entry points", {"__main__", "cli", "tools", "testing"}),
    ("composition root", {"gateway"}),
    ("web", {"web"}),
    ("server", {"server"}),
    ("health", {"health"}),
    ("game", {"game"}),
    ("janitor", {"cleanup"}),
    ("commands", {"commands"}),
    ("hub", {"hub"}),
    ("connection", {"connection", "transports"}),
    ("backplane", {"backplane"}),
    ("memory", {"memory"}),
    (
        "foundations",
        {
            "auth",
            "bounded",
            "client",
            "command_stats",
            "fields",
            "hooks",
            "logs",
            "protocol",
            "render",
            "settings",
            "tasks",
            "text",
        },
    ),
]
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}
WEB_FRAMEWORKS = ("fastapi", "starlette")


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts).removesuffix(".__init__"), path


def _part(module: str) -> str:
    return [*module.split("."), "__init__"][1]


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module ``module`` imports, type-checking imports included (a cycle there is a
    cycle in the design, whatever runs)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            yield base


def _edges() -> dict[tuple[str, str], set[str]]:
    """(importer, imported) part -> the module imports that make the edge."""
    edges: dict[tuple[str, str], set[str]] = {}
    for module, path in _modules():
        source = _part(module)
        if source == "__init__":
            continue
        for target in _imports(module, path):
            if target.startswith("mudgate.") and _part(target) != source:
                edges.setdefault((source, _part(target)), set()).add(f"{module} -> {target}")
    return edges


def test_every_part_has_a_layer() -> None:
    parts = {_part(module) for module, _ in _modules()} - {"__init__"}
    assert parts - set(RANK) == set(), "add the new part to LAYERS and docs/architecture.md"
    assert set(RANK) - parts == set(), "a part in LAYERS no longer exists"


def test_imports_between_parts_point_down() -> None:
    upward = [
        f"{LAYERS[RANK[source]][0]} imports {LAYERS[RANK[target]][0]}: {sorted(why)}"
        for (source, target), why in _edges().items()
        if RANK[target] < RANK[source]
    ]
    assert upward == []


def test_no_two_parts_import_each_other() -> None:
    edges = _edges()
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            part = stack.pop()
            if part == goal:
                return True
            if part not in seen:
                seen.add(part)
                stack.extend(graph.get(part, ()))
        return False

    cycles = sorted(
        f"{source} <-> {target}"
        for source, target in edges
        if source < target and reaches(target, source)
    )
    assert cycles == []


@pytest.mark.parametrize("rank", range(RANK["server"], len(LAYERS)))
def test_nothing_below_the_web_layer_imports_a_web_framework(rank: int) -> None:
    name, parts = LAYERS[rank]
    offenders = [
        f"{module} -> {target}"
        for module, path in _modules()
        if _part(module) in parts
        for target in _imports(module, path)
        if target.split(".")[0] in WEB_FRAMEWORKS
    ]
    assert offenders == [], f"the {name} layer"


def test_a_client_loads_neither_the_server_nor_a_web_framework() -> None:
    # In a fresh interpreter: what `import mudgate.client` costs a bot or a load test.
    code = (
        "import sys, mudgate.client\n"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'pydantic_settings', 'mudgate.hub',"
        " 'mudgate.server')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


def test_the_public_names_are_listed_once_for_each_use() -> None:
    import mudgate  # noqa: PLC0415

    # __all__ (for `import *` and linters) and the lazy table name the same things.
    assert set(mudgate.__all__) == set(mudgate._EXPORTS)
    assert len(mudgate.__all__) == len(set(mudgate.__all__))


def test_the_package_still_offers_every_public_name() -> None:
    code = "import mudgate\nprint(all(getattr(mudgate, name) for name in mudgate.__all__))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "True"
