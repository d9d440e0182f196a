"""What a user installs: the license, the changelog, the version, the wheel, the extras."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_mudgate_version_is_the_packages() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mudgate", "--version"], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == f"mudgate {PYPROJECT['project']['version']}"


def test_the_license_file_is_the_license_pyproject_names() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    # The SPDX string needs setuptools 77 (PEP 639); an older one fails a no-isolation build.
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]


def test_the_changelog_keeps_a_changelog() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "https://keepachangelog.com/" in changelog
    assert "## [Unreleased]" in changelog
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert PYPROJECT["project"]["version"] in versions
    for version in ["Unreleased", *versions]:
        assert re.search(rf"^\[{re.escape(version)}\]: https://", changelog, re.M), version


def test_serving_needs_no_test_or_benchmark_tool() -> None:
    runtime = " ".join(PYPROJECT["project"]["dependencies"])
    for tool in ("pytest", "playwright", "ruff", "mypy", "socketio", "matplotlib", "py-spy"):
        assert tool not in runtime
    makefile = (ROOT / "Makefile").read_text()
    run_stamp = re.search(r"^\$\(RUN_STAMP\):.*\n\t(.*)$", makefile, re.M)
    assert run_stamp is not None
    assert run_stamp.group(1).endswith("install -q -e '.[redis]'")
    assert re.search(r"^run: \$\(RUN_STAMP\)$", makefile, re.M)


def test_the_wheel_holds_the_pages_the_license_and_the_command(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    (wheel,) = tmp_path.glob("mudgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
        headers = archive.read(metadata).decode()
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert {"mudgate/web/static/play.html", "mudgate/py.typed"} <= set(names)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: MIT" in headers
    assert "Provides-Extra: redis" in headers
    assert "mudgate = mudgate.cli:main" in entry_points
