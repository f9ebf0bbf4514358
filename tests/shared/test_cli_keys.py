"""`xnovu keys create|list|revoke` and `xnovu --version` against the real database; a missing
setting is one line, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from importlib.metadata import version

from click.testing import CliRunner

from shared.cli import main
from tests.conftest import make_tenant


def _listed(*args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(main, ["keys", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_keys_are_created_listed_and_revoked(stack):
    enterprise = uuid.uuid4()
    created = CliRunner().invoke(
        main, ["keys", "create", "--enterprise", str(enterprise), "--name", "ops"]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("xnk_")

    [listed] = _listed("--enterprise", str(enterprise))
    assert listed["name"] == "ops" and listed["scope"] == "enterprise"
    assert listed["enterpriseId"] == str(enterprise) and listed["revokedAt"] is None
    assert key.startswith(str(listed["prefix"])) and key not in json.dumps(listed)
    other = make_tenant()
    assert all(
        item["enterpriseId"] == str(enterprise) for item in _listed("--enterprise", str(enterprise))
    )
    assert other.key_id in [item["id"] for item in _listed()]

    table = CliRunner().invoke(main, ["keys", "list", "--enterprise", str(enterprise)])
    assert table.exit_code == 0 and "ops" in table.output and key not in table.output

    revoked = CliRunner().invoke(main, ["keys", "revoke", str(listed["id"])])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert _listed("--enterprise", str(enterprise)) == []  # live keys only, by default
    [gone] = _listed("--enterprise", str(enterprise), "--revoked")
    assert gone["revokedAt"] is not None
    again = CliRunner().invoke(main, ["keys", "revoke", str(listed["id"])])
    assert again.exit_code == 0 and "already revoked" in again.output

    unknown = CliRunner().invoke(main, ["keys", "revoke", str(2**62)])
    assert unknown.exit_code == 1 and "no API key with id" in unknown.output


def test_version_and_a_missing_setting_are_one_line():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"xnovu, version {version('xnovu')}"

    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATIONS_DATABASE_URL")
    }
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines() == [
        "Error: DATABASE_URL is not set (run through `xnovu dev` or set it)"
    ]
