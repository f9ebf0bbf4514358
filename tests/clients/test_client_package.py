"""`pip install ./clients/python` in a fresh virtual environment installs the client and none
of the server's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
SERVER_ONLY = {
    "fastapi",
    "sqlalchemy",
    "celery",
    "psycopg",
    "redis",
    "alembic",
    "jinja2",
    "uvicorn",
}


@pytest.mark.timeout(300)
def test_the_client_installs_alone(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(CLIENT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert "xnovu-client" in installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY
    imported = subprocess.run(
        [str(python), "-c", "import xnovu_client, sys; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository, whose packages would shadow nothing here
    )
    assert imported.returncode == 0, imported.stderr
    assert "httpx" in imported.stdout and "fastapi" not in imported.stdout
