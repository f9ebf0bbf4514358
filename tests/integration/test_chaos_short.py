"""The short chaos run inside `make test`: 300 notifications while the worker is SIGKILLed twice,
Redis is SIGKILLed and restarted, the worker's PostgreSQL connections are terminated and Novu
fails calls (tests/chaos). `make chaos` runs the long form (2,000)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.stack import REPO

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_short_chaos_run_loses_nothing_sends_nothing_twice_and_leaves_nothing_stuck(
    tmp_path: Path,
) -> None:
    command = [
        sys.executable, "-m", "tests.chaos.chaos_run", "--short",
        "--notifications", "300", "--rate", "15", "--quiescence-timeout", "150",
        "--workdir", str(tmp_path / "chaos"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    print(done.stdout)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert "lost=0 duplicated=0 stuck=0" in done.stdout
