"""`make run`'s processes run under devtools/respawn.py: one that exits on its own is started
again with a line saying why, one that keeps dying at once is given up on, and a stop signal
to the process group stops both; `xnovu dev` refuses a taken port before starting anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import respawn
from tests.conftest import REPO

# Counts its runs in a file; dies with status 3 twice, then waits to be stopped.
FLAKY = """
import pathlib, sys, time
runs = pathlib.Path(sys.argv[1])
count = int(runs.read_text() or 0) + 1 if runs.exists() else 1
runs.write_text(str(count))
if count <= 2:
    sys.exit(3)
time.sleep(60)
"""


def test_a_process_that_exits_is_started_again_and_says_why(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.respawn",
            "flaky",
            "--",
            sys.executable,
            "-c",
            FLAKY,
            str(runs),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as honcho gives it
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not runs.exists() or runs.read_text() != "3"):
        time.sleep(0.05)
    assert runs.read_text() == "3"
    os.killpg(supervisor.pid, signal.SIGTERM)  # as honcho stops it
    assert supervisor.wait(10) == -signal.SIGTERM  # the command's own status
    assert supervisor.stderr is not None
    said = supervisor.stderr.read()
    assert said.count("[respawn flaky] exited on its own with status 3") == 2, said
    assert "restarting in 1 s" in said and "restarting in 2 s" in said, said
    assert runs.read_text() == "3"  # not started again once stopped


def test_a_process_that_keeps_dying_at_once_is_given_up(monkeypatch, capsys) -> None:
    monkeypatch.setattr(respawn, "FIRST_WAIT_SECONDS", 0.01)
    code = respawn.supervise("broken", [sys.executable, "-c", "raise SystemExit(7)"])
    assert code == 1
    said = capsys.readouterr().err
    assert "exited with status 7 5 times" in said and "giving up" in said


@pytest.mark.parametrize("command", [["keys", "list", "--json"]])
def test_cli_commands_use_the_running_stacks_servers(stack, tmp_path: Path, command) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dev.env").write_text(f"DATABASE_URL={stack.env['DATABASE_URL']}\n")
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "XNOVU_DATA_DIR": str(data),
    }
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "(using DATABASE_URL of the running `make run`" in done.stderr
