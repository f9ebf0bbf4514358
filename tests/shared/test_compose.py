"""docker-compose.yml has no public defaults (issue 12, item 8; README "Production").

The attack: `docker compose up` with nothing set ran with the emulator's public Novu secret
(which signs a bridge `execute` for any enterprise), Flower as admin:change-me on 0.0.0.0 with
the password on its command line, PostgreSQL's password `xnovu`, and services connected as a
superuser. There is no Docker engine here, so the file is checked as data: every secret is a
required variable (`${VAR:?message}`: compose refuses to start without it), no URL names a
superuser, and Flower takes its credentials from its environment. `docker compose config`
(or docker-compose v1) checks the same when either is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devtools.devstack import free_port
from tests.conftest import REPO, Stack

COMPOSE = REPO / "docker-compose.yml"
# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
REQUIRED = {
    "NOVU_API_URL",
    "NOVU_SECRET_KEY",
    "FLOWER_BASIC_AUTH",
    "POSTGRES_PASSWORD",
    "XNOVU_OWNER_PASSWORD",
    "XNOVU_SERVICE_PASSWORD",
    "UI_SESSION_SECRET",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH|TOKEN|KEY")
FULL_ENV = {
    "NOVU_API_URL": "https://api.novu.co",
    "NOVU_SECRET_KEY": "nv-secret",
    "FLOWER_BASIC_AUTH": "ops:flower-pw",
    "POSTGRES_PASSWORD": "pg-pw",
    "XNOVU_OWNER_PASSWORD": "owner-pw",
    "XNOVU_SERVICE_PASSWORD": "service-pw",
    "UI_SESSION_SECRET": "ui-session-secret-of-at-least-32-chars",
}


def _text() -> str:
    return COMPOSE.read_text()


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(_text())
    return document


def _interpolations() -> list[re.Match[str]]:
    return list(INTERPOLATION.finditer(_text()))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment as a mapping, so `<<:` merges apply"
    return {key: str(value) for key, value in environment.items()}


def test_every_secret_is_required_with_a_message_and_has_no_default() -> None:
    seen: set[str] = set()
    for match in _interpolations():
        name, op, argument = match["name"], match["op"], match["arg"]
        if name in REQUIRED:
            assert op == ":?", f"{match[0]}: a secret must be `${{{name}:?message}}`"
            assert argument.strip(), f"{match[0]}: say what to set"
            seen.add(name)
        elif SECRET_NAME.search(name):
            # An optional credential may default to nothing (the feature stays off), never to
            # a value.
            assert op in (":?", ":-") and (op == ":?" or argument == ""), match[0]
    assert seen == REQUIRED


def test_no_secret_is_written_into_the_file() -> None:
    text = _text()
    for public in ("xnovu-emulator-secret", "change-me", "admin:"):
        assert public not in text
    for name, service in _compose()["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(value), f"{name}.{key} is a literal"
        for word in service.get("command") or []:
            assert "basic-auth" not in word and "basic_auth" not in word, name


def test_services_connect_as_the_service_role_and_migrations_as_the_owner() -> None:
    services = _compose()["services"]
    users: dict[str, set[str]] = {}
    for name, service in services.items():
        for key, value in _environment(service).items():
            if key.endswith("DATABASE_URL"):
                user = re.match(r"postgresql://(\w+):", value)
                assert user is not None, f"{name}.{key}: {value}"
                users.setdefault(key, set()).add(user[1])
    assert users == {"DATABASE_URL": {"xnovu_service"}, "MIGRATIONS_DATABASE_URL": {"xnovu_owner"}}
    assert "DATABASE_URL" not in _environment(services["migrate"])
    for name in ("api", "worker", "beat"):
        assert _environment(services[name])["DATABASE_URL"].startswith(
            "postgresql://xnovu_service:"
        )
    # The roles are made once, by the init script, from the passwords given to PostgreSQL.
    postgres = services["postgres"]
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert {"XNOVU_OWNER_PASSWORD", "XNOVU_SERVICE_PASSWORD"} <= set(_environment(postgres))
    assert os.access(REPO / "deploy" / "postgres" / "10-xnovu-roles.sh", os.X_OK)


def test_flower_reads_its_credentials_from_its_environment_and_is_published_on_loopback() -> None:
    flower = _compose()["services"]["flower"]
    assert _environment(flower)["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not any("auth" in word for word in flower["command"])
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])
    # Flower needs the broker only: no database credentials.
    assert not any(key.endswith("DATABASE_URL") for key in _environment(flower))


def test_the_api_says_whose_forwarded_address_it_believes() -> None:
    api = _environment(_compose()["services"]["api"])
    assert api["FORWARDED_ALLOW_IPS"] == "${FORWARDED_ALLOW_IPS:-127.0.0.1}"


def _compose_binary() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose here; the tests above check the file as data")
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env.update({k: v for k, v in FULL_ENV.items() if k != missing})
    refused = subprocess.run(
        [*binary, "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and missing in refused.stderr, refused.stderr
    accepted = subprocess.run(
        [*binary, "-f", str(COMPOSE), "config"],
        env={**env, **FULL_ENV},
        capture_output=True,
        text=True,
    )
    assert accepted.returncode == 0, accepted.stderr


def test_flower_takes_basic_auth_from_its_environment(stack: Stack, tmp_path: Path) -> None:
    """The compose command line carries no credentials: Flower itself must read
    FLOWER_BASIC_AUTH, or it would serve everyone."""
    port = free_port()
    env = {**stack.env, "FLOWER_BASIC_AUTH": "ops:s3cret-flower"}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower",
         "--address=127.0.0.1", f"--port={port}"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                anonymous = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
                time.sleep(0.3)
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("ops", "s3cret-flower"), timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)


def test_one_image_built_once_and_run_by_every_service_of_ours() -> None:
    services = _compose()["services"]
    assert [name for name, service in services.items() if "build" in service] == ["migrate"]
    ours = [name for name, service in services.items() if service.get("image") == "xnovu:latest"]
    assert set(ours) == {"migrate", "api", "worker", "webhooks", "beat", "flower", "novu"}
    for name in ours:
        if name != "migrate":
            assert services[name]["pull_policy"] == "never", name  # never pulled: built here


def test_every_long_running_service_has_a_health_check() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        if name == "migrate":
            continue  # one-shot
        check = service.get("healthcheck", {}).get("test")
        assert check, f"{name} has no health check"
    assert services["beat"]["healthcheck"]["test"] == ["CMD", "xnovu", "health", "beat"]
    for worker, hostname in (("worker", "xnovu-worker"), ("webhooks", "xnovu-webhooks")):
        assert f"--hostname={hostname}@%h" in services[worker]["command"]
        assert (
            f"inspect ping -d {hostname}@$$HOSTNAME" in services[worker]["healthcheck"]["test"][1]
        )


def test_the_emulator_is_only_in_the_dev_profile_and_executes_steps_on_our_bridge() -> None:
    services = _compose()["services"]
    assert services["novu"]["profiles"] == ["dev"]
    assert all("profiles" not in service for name, service in services.items() if name != "novu")
    assert _environment(services["api"])["NOVU_BRIDGE_PUBLIC_URL"] == "${NOVU_BRIDGE_PUBLIC_URL:-}"
    text = _text()
    assert "NOVU_BRIDGE_PUBLIC_URL=http://api:8000/api/novu" in text  # how --profile dev is run
    readme = (REPO / "README.md").read_text()
    assert "docker compose run --rm api xnovu keys create --enterprise" in readme
