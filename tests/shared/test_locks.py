"""requirements/*.lock (written by `make lock`) pin, with hashes, a version of every dependency
pyproject.toml names that its specifier allows: `make install` and the Docker image install
from them with --require-hashes, so a dependency added without `make lock` is caught here
with its name, not later as an import error."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def _pins(lock: str) -> dict[str, str]:
    text = (REPO / "requirements" / lock).read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        found = PIN.match(block)
        if found:
            assert "--hash=sha256:" in block, f"{lock}: {found[1]} has no hash"
            pins[canonicalize_name(found[1])] = found[2]
    return pins


def _wanted(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(spec) for spec in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(spec) for spec in project["optional-dependencies"][extra]]
    client = tomllib.loads((REPO / "clients" / "python" / "pyproject.toml").read_text())
    if extras:
        wanted += [Requirement(spec) for spec in client["project"]["dependencies"]]
    return wanted


@pytest.mark.parametrize(
    ("lock", "extras"), [("base.lock", ()), ("dev.lock", ("test", "dev", "devstack"))]
)
def test_the_locks_pin_every_dependency_within_its_specifier(lock, extras):
    pins = _pins(lock)
    assert len(pins) > 20
    for requirement in _wanted(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/{lock}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name]}, outside {requirement.specifier}: "
            "run `make lock`"
        )
    base = _pins("base.lock")
    assert "pgserver" not in base and "pytest" not in base  # production installs no dev stack
