"""`xnovu dev --api-processes 2 --workers 2`: the multi-process shape of docs/scaling.md on one
machine. Both API processes answer on the one port, both delivery workers answer Celery's ping,
and a trigger is SENT, its steps executed by Novu (the emulator) on our bridge."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from celery import Celery

from tests.conftest import REPO
from tests.integration.test_make_run import (
    _cmdline,
    _read_until,
    assert_nothing_left,
    dev_stack_env,
    stop,
)

pytestmark = pytest.mark.integration


def test_two_api_processes_and_two_workers_serve_a_trigger(tmp_path: Path) -> None:
    env, ports = dev_stack_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "dev", "--api-processes", "2", "--workers", "2",
         "--worker-concurrency", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log: list[str] = []
    try:
        _read_until(proc, "Press Ctrl-C to stop everything", 180, log)
        api = f"http://127.0.0.1:{ports['API_PORT']}"
        key = next(line.split()[-1] for line in log if "API key" in line)
        headers = {"Authorization": f"Bearer {key}"}

        response = httpx.post(
            f"{api}/api/trigger",
            headers=headers,
            json={
                "workflowId": "user-signup",
                "payload": {"userId": "u-1", "email": "ada@example.com", "name": "Ada"},
            },
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        row: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = httpx.get(f"{api}/api/notifications/{accepted['notificationId']}",
                            headers=headers).json()  # fmt: skip
            if row["notification_status"] in {"SENT", "FAILED"}:
                break
            time.sleep(0.2)
        assert row["notification_status"] == "SENT", row
        # Novu's side of the bridge: the emulator executed the step on one of our processes.
        messages: list = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not messages:
            messages = httpx.get(
                f"http://127.0.0.1:{ports['NOVU_EMULATOR_PORT']}/_emulator/messages",
                params={"transactionId": accepted["transactionId"]},
            ).json()
            time.sleep(0.2)
        assert messages, "the emulator executed no step on the bridge"

        api_pids = _api_processes(proc.pid)
        assert len(api_pids) == 2, api_pids
        assert _pids_answering(api, ports["API_PORT"], api_pids) == api_pids

        broker = next(line for line in (tmp_path / "data" / "dev.env").read_text().splitlines()
                      if line.startswith("REDIS_URL="))  # fmt: skip
        pongs = Celery(broker=broker.split("=", 1)[1]).control.ping(timeout=2.0)
        nodes = {name.split("@")[0] for reply in pongs for name in reply}
        assert {"xnovu-worker-1", "xnovu-worker-2", "xnovu-webhooks"} <= nodes, nodes
    finally:
        children = stop(proc)
    assert_nothing_left(children, tmp_path)


def _api_processes(root: int) -> set[int]:
    """The pids of uvicorn's serving processes (the children of its manager)."""
    [manager] = [
        p
        for p in psutil.Process(root).children(recursive=True)
        if _cmdline(p)[1:3] == ["-m", "uvicorn"] and "--workers" in _cmdline(p)
    ]
    return {
        child.pid
        for child in manager.children()
        if child.is_running() and "resource_tracker" not in " ".join(_cmdline(child))
    }


def _pids_answering(api: str, port: int, pids: set[int], tries: int = 200) -> set[int]:
    """Which of `pids` answered /healthz over new connections (each connection's server side
    found among the processes' sockets), until all have or `tries` connections are made."""
    answered: set[int] = set()
    for _ in range(tries):
        with httpx.Client() as http:
            assert http.get(f"{api}/healthz").status_code == 200
            # httpx keeps the connection open until the client closes: find its other end.
            [local] = {
                c.laddr.port
                for c in psutil.Process().net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
            }
            for pid in pids - answered:
                if any(
                    c.raddr and c.raddr.port == local
                    for c in psutil.Process(pid).net_connections(kind="tcp")
                ):
                    answered.add(pid)
        if answered == pids:
            break
    return answered
